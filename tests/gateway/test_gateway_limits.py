"""POST /jobs under the user's limits (decided by the jobs service; here its fake refuses or admits
as the test says): each limit's own code and status, Retry-After, nothing stored, the upload stopped
as soon as it would pass the stored-bytes quota; GET /usage and GET /config."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import httpx
import pytest

from services.common.config import Settings
from services.common.gen.radiology.v1 import jobs_pb2
from tests.gateway.fakes import Fakes
from tests.gateway.helpers import PNG, gateway_client, multipart, upload

L = jobs_pb2.LimitExceeded
ALICE = {"X-User-ID": "alice"}


@pytest.mark.parametrize(
    ("limit", "retry", "status", "code", "retry_after"),
    [
        (L.LIMIT_SUBMISSION_RATE, 2.2, 429, "rate_limited", "3"),
        (L.LIMIT_SUBMISSION_RATE, 0.01, 429, "rate_limited", "1"),
        (L.LIMIT_ACTIVE_JOBS, 5.0, 429, "too_many_active_jobs", "5"),
        (L.LIMIT_STORED_BYTES, 0.0, 413, "storage_quota_exceeded", None),
    ],
)
async def test_a_limit_refusal_is_its_own_code_before_anything_is_stored(
    client: httpx.AsyncClient, fakes: Fakes, limit: int, retry: float, status: int, code: str,
    retry_after: str | None,
) -> None:
    fakes.jobs.refusal = L(limit=limit, retry_after_seconds=retry)
    resp = await upload(client, [("files", "a.png", PNG + bytes(300_000))])
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == code and "as the test asked" in resp.json()["detail"]
    assert resp.headers.get("retry-after") == retry_after
    assert fakes.storage.puts_started == 0 and fakes.storage.objects == {} and fakes.jobs.created == []


async def test_resource_exhausted_without_a_limit_stays_the_generic_413(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.jobs.fail["AdmitSubmission"] = grpc.StatusCode.RESOURCE_EXHAUSTED
    resp = await upload(client, [("files", "a.png", PNG)])
    assert (resp.status_code, resp.json()["code"]) == (413, "too_large")


async def test_every_submission_is_admitted_first(client: httpx.AsyncClient, fakes: Fakes) -> None:
    assert (await upload(client, [("files", "a.png", PNG)])).status_code == 202
    assert fakes.jobs.admitted == ["alice"]
    # A request that is not even a form takes no submission.
    bad = await client.post("/jobs", content=b"x", headers={**ALICE, "Content-Type": "text/plain"})
    assert bad.status_code == 400 and fakes.jobs.admitted == ["alice"]


async def test_the_upload_stops_as_soon_as_it_would_pass_the_quota(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.jobs.remaining_bytes = 100_000
    body, ctype = multipart([("files", "a.png", PNG + bytes(2_000_000)), ("files", "b.png", PNG)])
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: only streaming can tell
        nonlocal sent
        for start in range(0, len(body), 16_384):
            sent += 16_384
            yield body[start : start + 16_384]

    resp = await client.post("/jobs", content=chunks(), headers={**ALICE, "Content-Type": ctype})
    assert (resp.status_code, resp.json()["code"]) == (413, "storage_quota_exceeded")
    assert "100000 bytes are left" in resp.json()["detail"]
    assert sent <= 100_000 + 2 * 16_384, sent  # stopped at the quota, not at the end of the body
    assert fakes.storage.objects == {} and fakes.jobs.created == []

    # Within the quota: accepted. A declared Content-Length over it: refused before reading.
    assert (await upload(client, [("files", "a.png", PNG + bytes(90_000))])).status_code == 202
    puts = fakes.storage.puts_started
    declared = await upload(client, [("files", "a.png", PNG + bytes(200_000))])
    assert (declared.status_code, declared.json()["code"]) == (413, "storage_quota_exceeded")
    assert fakes.storage.puts_started == puts


async def test_usage_shows_the_callers_usage_and_limits(client: httpx.AsyncClient, fakes: Fakes) -> None:
    fakes.jobs.remaining_bytes = 10_000
    await upload(client, [("files", "a.png", PNG)])
    await upload(client, [("files", "b.png", PNG)], user="bob")
    resp = await client.get("/usage", headers=ALICE)
    assert resp.status_code == 200
    assert resp.json() == {
        "user_id": "alice", "active_jobs": 1, "stored_bytes": len(PNG), "submissions_available": 8,
        "limits": {"submissions_per_minute": 60, "submission_burst": 10, "max_active_jobs": 5,
                   "max_stored_bytes": 10_000},
    }
    fakes.jobs.remaining_bytes = -1  # no quota: null
    assert (await client.get("/usage", headers=ALICE)).json()["limits"]["max_stored_bytes"] is None
    assert (await client.get("/usage")).status_code == 401


async def test_config_names_the_auth_mode(client: httpx.AsyncClient) -> None:
    resp = await client.get("/config")
    assert resp.status_code == 200 and resp.json() == {"auth": "header"}


async def test_config_in_jwt_mode(make_settings: Callable[..., Settings]) -> None:
    async with gateway_client(make_settings(auth="jwt", jwt_secret="s" * 32)) as c:
        resp = await c.get("/config")  # no token needed: the UI asks before it has one
    assert resp.status_code == 200 and resp.json() == {"auth": "jwt"}
