"""Submissions against sick backing services: a frozen processor never holds an upload longer than
the catalogue's short deadline, and an Idempotency-Key makes a retry return the same job, also when
CreateJob's outcome was unknown (files of a job that may exist are never removed)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import httpx
import pytest

from services.gateway import catalogue
from tests.gateway.fakes import Fakes
from tests.gateway.helpers import PNG, gateway_client, upload

S = grpc.StatusCode


def _blur(sigma: float) -> list[tuple[str, str | None, bytes]]:
    return [("files", "a.png", PNG), ("params", None, f'{{"sigma": {sigma}}}'.encode())]


async def _timed(coro: Any) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    resp = await coro
    return resp, time.monotonic() - start


async def test_a_frozen_processor_holds_no_submission_past_the_deadline(
    make_settings: Any, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalogue, "CACHE_SECONDS", 0.0)  # every upload would ask the processor
    async with gateway_client(make_settings(validate_timeout_seconds=0.5)) as client:
        known = await upload(client, _blur(2))
        assert known.status_code == 202, known.text
        fakes.processor.hang = True
        # Concurrent ones: no lock queues them behind each other (20 x 0.5 s would be 10 s).
        results = await asyncio.gather(
            *(_timed(upload(client, _blur(2 if i % 2 else 3 + i))) for i in range(20))
        )
        slowest = max(took for _, took in results)
        assert slowest < 2.5, slowest
        for i, (resp, _) in enumerate(results):
            if i % 2:
                assert resp.status_code == 202, resp.text  # validated before: queued
            else:
                assert resp.status_code == 503 and resp.headers["retry-after"], resp.text
                assert "processor" in resp.json()["detail"]
        # Meanwhile the processor is known to be away: no further wait at all.
        resp, took = await _timed(upload(client, _blur(7)))
        assert resp.status_code == 503 and took < 0.4, took
        fakes.processor.hang = False
        await asyncio.sleep(catalogue.DOWN_SECONDS)
        assert (await upload(client, _blur(7))).status_code == 202  # asked again once it answers


async def test_a_retry_with_the_same_key_returns_the_same_job(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    first = await upload(client, _blur(2), **{"Idempotency-Key": "scan-42"})
    assert first.status_code == 202, first.text
    assert first.headers["location"] == f"/jobs/{first.json()['job_id']}"
    stored = set(fakes.storage.objects)
    again = await upload(client, _blur(2), **{"Idempotency-Key": "scan-42"})
    assert again.status_code == 200, again.text
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.json()["task_ids"] == first.json()["task_ids"]
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert set(fakes.storage.objects) == stored and len(fakes.jobs.created) == 1
    # Keys are per user: bob's key never finds alice's job.
    bob = await upload(client, _blur(2), user="bob", **{"Idempotency-Key": "scan-42"})
    assert bob.status_code == 202 and bob.json()["job_id"] != first.json()["job_id"]


@pytest.mark.parametrize("key", ["", "a b", "x" * 129, "ключ".encode(), "a/b", "k,l"], ids=repr)
async def test_a_bad_key_is_400(client: httpx.AsyncClient, fakes: Fakes, key: str | bytes) -> None:
    resp = await upload(client, _blur(2), **{"Idempotency-Key": key})
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == "invalid_idempotency_key"
    assert fakes.storage.objects == {} and fakes.jobs.created == []


async def test_a_key_sent_twice_is_400(client: httpx.AsyncClient, fakes: Fakes) -> None:
    from tests.gateway.helpers import multipart

    body, ctype = multipart(_blur(2))
    headers = [("X-User-ID", "alice"), ("Content-Type", ctype), ("Idempotency-Key", "a"),
               ("Idempotency-Key", "b")]
    resp = await client.post("/jobs", content=body, headers=headers)
    assert resp.status_code == 400 and resp.json()["code"] == "invalid_idempotency_key"
    assert fakes.storage.objects == {}


async def test_a_key_taken_meanwhile_gives_that_job_and_removes_this_upload(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    first = await upload(client, _blur(2), **{"Idempotency-Key": "race"})
    stored = set(fakes.storage.objects)
    fakes.jobs.fail["GetJob"] = S.NOT_FOUND  # the look-up before the upload misses it (a race)
    again = await upload(client, _blur(2), **{"Idempotency-Key": "race"})
    assert again.status_code == 200 and again.json()["job_id"] == first.json()["job_id"]
    assert set(fakes.storage.objects) == stored  # the second upload's files are gone


@pytest.mark.parametrize("code", [S.UNAVAILABLE, S.DEADLINE_EXCEEDED])
async def test_a_job_committed_before_the_failure_keeps_its_files(
    client: httpx.AsyncClient, fakes: Fakes, code: grpc.StatusCode
) -> None:
    fakes.jobs.fail_after_commit = code
    resp = await upload(client, _blur(2), **{"Idempotency-Key": "died-after-commit"})
    assert resp.status_code == 202, resp.text  # asked, and found it
    job = fakes.jobs.jobs[resp.json()["job_id"]]
    assert all(t.input_key in fakes.storage.objects for t in job.tasks)


async def test_an_unknown_outcome_is_503_keeps_the_files_and_the_retry_settles_it(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    # The service goes away as CreateJob is called: nor can it be asked afterwards.
    fakes.jobs.fail_from_create = {"CreateJob": S.UNAVAILABLE, "GetJob": S.UNAVAILABLE}
    resp, took = await _timed(upload(client, _blur(2), **{"Idempotency-Key": "unsure"}))
    assert resp.status_code == 503 and resp.json()["code"] == "outcome_unknown", resp.text
    assert "same Idempotency-Key" in resp.json()["detail"] and resp.headers["retry-after"]
    assert took < 3  # create_lookup_seconds is 1 in these tests
    kept = set(fakes.storage.objects)
    assert kept  # the job may exist: its files stay (the janitor removes them if it does not)

    fakes.jobs.fail.clear()
    fakes.jobs.fail_from_create.clear()
    retry = await upload(client, _blur(2), **{"Idempotency-Key": "unsure"})
    assert retry.status_code == 202 and len(fakes.jobs.jobs) == 1
    again = await upload(client, _blur(2), **{"Idempotency-Key": "unsure"})
    assert again.status_code == 200 and again.json()["job_id"] == retry.json()["job_id"]


async def test_without_a_key_the_503_says_how_to_retry_safely(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.jobs.fail["CreateJob"] = S.DEADLINE_EXCEEDED
    resp = await upload(client, _blur(2))
    assert resp.status_code == 503 and resp.json()["code"] == "outcome_unknown"
    assert "Idempotency-Key" in resp.json()["detail"]
