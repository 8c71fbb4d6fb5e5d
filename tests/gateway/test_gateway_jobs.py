"""Identity, job/task JSON, isolation between users, listing, cancel, delete."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from pydantic import ValidationError

from services.common.config import Settings
from services.common.gen.radiology.v1 import common_pb2
from services.gateway.signing import UrlSigner
from tests.gateway import catalogue_fixture
from tests.gateway.fakes import Fakes, result_for
from tests.gateway.helpers import PNG, upload

ALICE = {"X-User-ID": "alice"}
BOB = {"X-User-ID": "bob"}
MISSING = "00000000-0000-4000-8000-000000000000"


async def new_job(client: httpx.AsyncClient, files: int = 2, user: str = "alice") -> dict:
    resp = await upload(client, [("files", f"scan{i}.png", PNG) for i in range(files)], user=user)
    assert resp.status_code == 202, resp.text
    return resp.json()


@pytest.mark.parametrize(
    "user_id",
    [
        b"../../etc",
        b"..",
        b".",
        b"a" * 65,
        b"alice/x",
        b"al ice",
        b"",
        "\u00e5lice".encode(),
        "\u200balice".encode(),
    ],
)
async def test_hostile_user_id_is_400(client: httpx.AsyncClient, fakes: Fakes, user_id: bytes) -> None:
    resp = await upload(client, [("files", "a.png", PNG)], user=None, **{"X-User-ID": user_id})  # type: ignore[arg-type]
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == "invalid_user_id"
    assert (await client.get(f"/jobs/{MISSING}", headers={"X-User-ID": user_id})).status_code == 400  # type: ignore[dict-item]
    assert fakes.storage.objects == {} and fakes.storage.puts_started == 0


async def test_valid_user_id_characters(client: httpx.AsyncClient) -> None:
    user = "A.z_0@x-" + "y" * 56
    job = await new_job(client, user=user)
    assert job["user_id"] == user


async def test_missing_identity_is_401_everywhere(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/jobs"),
        ("GET", f"/jobs/{MISSING}"),
        ("GET", f"/tasks/{MISSING}"),
        ("POST", f"/jobs/{MISSING}/cancel"),
        ("DELETE", f"/jobs/{MISSING}"),
    ]:
        resp = await client.request(method, path)
        assert resp.status_code == 401
        assert resp.json() == {
            "detail": "Identify yourself with the X-User-ID header.",
            "code": "missing_identity",
        }


def test_an_unknown_auth_mode_stops_the_gateway_at_start(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValidationError, match="auth"):
        make_settings(auth="basic")


async def test_job_json_pending_then_success_with_signed_urls(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    created = await new_job(client)
    job_id = created["job_id"]
    resp = await client.get(f"/jobs/{job_id}", headers=ALICE)
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "PENDING" and body["progress"] == 0
    assert body["task_type"] == "blur" and body["params"] == catalogue_fixture.defaults("blur")
    assert [t["task_id"] for t in body["task_results"]] == created["task_ids"]
    first = body["task_results"][0]
    assert first == {
        "task_id": created["task_ids"][0],
        "status": "PENDING",
        "progress": 0,
        "input_file": "scan0.png",
        "error": None,
        "started_at": None,
        "finished_at": None,
        "result": None,
        "logs": [],
    }

    job = fakes.jobs.jobs[job_id]
    for t in job.tasks:
        t.result.CopyFrom(result_for(job, t))
        t.logs.extend(["decode: 0.001 s", "operation blur: 0.002 s"])
        t.started_at.GetCurrentTime()
        t.finished_at.GetCurrentTime()
    await fakes.jobs.update(job_id, common_pb2.STATUS_SUCCESS, 100)
    body = (await client.get(f"/jobs/{job_id}", headers=ALICE)).json()
    assert set(body) == {
        "job_id",
        "user_id",
        "status",
        "progress",
        "message",
        "task_type",
        "params",
        "created_at",
        "updated_at",
        "task_results",
    }
    assert body["status"] == "SUCCESS" and body["progress"] == 100
    task = body["task_results"][0]
    assert task["started_at"].endswith("Z") and task["finished_at"].endswith("Z")
    assert task["logs"] == ["decode: 0.001 s", "operation blur: 0.002 s"]
    result = task["result"]
    assert result["input_file"] == "scan0.png" and result["output_file"] == "scan0_processed.png"
    assert result["task_type"] == "blur"
    assert result["metadata"] == {"format": "png", "shape": [2, 3], "spacing": [0.5, 0.5]}
    assert re.fullmatch(
        rf"/files/alice/{job_id}/scan0_processed\.png\?token=\d+\.[A-Za-z0-9_-]+", result["output_url"]
    )
    (out,) = result["outputs"]
    assert out["filename"] == "scan0_processed.png" and out["role"] == "primary" and out["size"] == 3
    assert out["media_type"] == "image/png" and out["url"].startswith(
        f"/files/alice/{job_id}/scan0_processed.png?"
    )
    signer = UrlSigner(b"test-secret", 3600)
    token = result["output_url"].split("token=")[1]
    assert signer.verify("alice", job_id, "scan0_processed.png", token)

    # The task alone has the same shape.
    one = await client.get(f"/tasks/{task['task_id']}", headers=ALICE)
    assert one.status_code == 200
    assert set(one.json()) == set(task) and one.json()["result"]["output_file"] == "scan0_processed.png"


async def test_failed_task_carries_error_and_no_result(client: httpx.AsyncClient, fakes: Fakes) -> None:
    job_id = (await new_job(client, files=1))["job_id"]
    await fakes.jobs.update(job_id, common_pb2.STATUS_FAILED, 100, error="PNG data is truncated")
    task = (await client.get(f"/jobs/{job_id}", headers=ALICE)).json()["task_results"][0]
    assert task["status"] == "FAILED" and task["error"] == "PNG data is truncated" and task["result"] is None


async def test_other_users_resources_are_404_identical_to_missing(client: httpx.AsyncClient) -> None:
    created = await new_job(client)
    job_id, task_id = created["job_id"], created["task_ids"][0]
    pairs = [
        ("GET", f"/jobs/{job_id}", f"/jobs/{MISSING}"),
        ("GET", f"/tasks/{task_id}", f"/tasks/{MISSING}"),
        ("POST", f"/jobs/{job_id}/cancel", f"/jobs/{MISSING}/cancel"),
        ("DELETE", f"/jobs/{job_id}", f"/jobs/{MISSING}"),
        ("GET", f"/jobs/{job_id}/events", f"/jobs/{MISSING}/events"),
        ("GET", f"/files/alice/{job_id}/scan0.png", f"/files/alice/{MISSING}/scan0.png"),
        ("GET", f"/jobs/{job_id}", f"/jobs/{'x' * 300}"),
        ("GET", f"/tasks/{task_id}", "/tasks/..%2F..%2Fetc"),
    ]
    for method, theirs, missing in pairs:
        a = await client.request(method, theirs, headers=BOB)
        b = await client.request(method, missing, headers=BOB)
        assert a.status_code == b.status_code == 404, (theirs, a.text)
        assert a.content == b.content == b'{"detail":"Not found","code":"not_found"}'
        assert a.headers["content-type"] == b.headers["content-type"]
    # Alice still has everything.
    assert (await client.get(f"/jobs/{job_id}", headers=ALICE)).json()["status"] == "PENDING"
    listing = (await client.get("/jobs", headers=BOB)).json()
    assert listing == {"jobs": [], "next_cursor": None}


async def test_list_jobs_newest_first_paginated_and_filtered(client: httpx.AsyncClient, fakes: Fakes) -> None:
    ids = [(await new_job(client, files=1))["job_id"] for _ in range(3)]
    page = (await client.get("/jobs", params={"limit": 2}, headers=ALICE)).json()
    assert [j["job_id"] for j in page["jobs"]] == ids[::-1][:2]
    assert page["next_cursor"]
    rest = (
        await client.get("/jobs", params={"limit": 2, "cursor": page["next_cursor"]}, headers=ALICE)
    ).json()
    assert [j["job_id"] for j in rest["jobs"]] == [ids[0]] and rest["next_cursor"] is None
    await fakes.jobs.update(ids[1], common_pb2.STATUS_RUNNING, 40)
    running = (await client.get("/jobs", params={"status": "RUNNING"}, headers=ALICE)).json()
    assert [j["job_id"] for j in running["jobs"]] == [ids[1]]
    assert running["jobs"][0]["progress"] == 40

    bad = await client.get("/jobs", params={"status": "DONE"}, headers=ALICE)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_parameters"
    bad = await client.get("/jobs", params={"limit": 1000}, headers=ALICE)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_parameters"
    assert "limit" in bad.json()["detail"]


@pytest.mark.parametrize("cursor", ["garbage", "not a cursor!"])
async def test_an_invalid_cursor_is_a_422_like_other_bad_parameters(
    client: httpx.AsyncClient, fakes: Fakes, cursor: str
) -> None:
    await new_job(client, files=1)
    resp = await client.get("/jobs", params={"cursor": cursor}, headers=ALICE)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["code"] == "invalid_parameters"
    assert "cursor" in body["detail"] and cursor not in body["detail"]
    too_long = await client.get("/jobs", params={"cursor": "x" * 600}, headers=ALICE)
    assert too_long.status_code == 422 and too_long.json()["code"] == "invalid_parameters"


async def test_cancel_and_delete(client: httpx.AsyncClient, fakes: Fakes) -> None:
    job_id = (await new_job(client))["job_id"]
    resp = await client.post(f"/jobs/{job_id}/cancel", headers=ALICE)
    assert resp.status_code == 200
    assert resp.json()["status"] == "CANCELLED"
    assert {t["status"] for t in resp.json()["task_results"]} == {"CANCELLED"}
    assert any(k.startswith(f"alice/{job_id}/") for k in fakes.storage.objects)
    resp = await client.delete(f"/jobs/{job_id}", headers=ALICE)
    assert resp.status_code == 204 and resp.content == b""
    assert (await client.get(f"/jobs/{job_id}", headers=ALICE)).status_code == 404
    assert fakes.storage.objects == {}
