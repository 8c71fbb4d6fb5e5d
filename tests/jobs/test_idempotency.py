"""CreateJob with an idempotency key: one job per user and key, whatever the retries and races."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from sqlalchemy import func, select

from services.common.gen.radiology.v1 import jobs_pb2
from services.jobs import models

from .harness import Running
from .test_service import create_request


def keyed(user: str, key: str, *names: str) -> jobs_pb2.CreateJobRequest:
    req = create_request(user, *(names or ("a.png",)))
    req.idempotency_key = key
    return req


async def _key_rows(jobs: Running) -> int:
    async with jobs.app.repo.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(models.job_keys))).scalar_one()


async def test_same_key_returns_the_first_job(jobs: Running) -> None:
    first = await jobs.stub.CreateJob(keyed("alice", "order-1"))
    retry = keyed("alice", "order-1")  # a new job id: the gateway's second upload
    again = await jobs.stub.CreateJob(retry)
    assert again.job_id == first.job_id != retry.job_id
    assert [t.task_id for t in again.tasks] == [t.task_id for t in first.tasks]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id="alice", job_id=retry.job_id))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # nothing recorded for the retry

    found = await jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id="alice", idempotency_key="order-1"))
    assert found.job_id == first.job_id


async def test_keys_are_per_user(jobs: Running) -> None:
    alice = await jobs.stub.CreateJob(keyed("alice", "shared-key"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id="bob", idempotency_key="shared-key"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    bob = await jobs.stub.CreateJob(keyed("bob", "shared-key"))
    assert bob.job_id != alice.job_id and bob.user_id == "bob"


async def test_concurrent_calls_with_one_key_create_one_job(jobs: Running) -> None:
    before = await _key_rows(jobs)
    replies = await asyncio.gather(*(jobs.stub.CreateJob(keyed("dave", "burst")) for _ in range(8)))
    assert len({r.job_id for r in replies}) == 1
    listed = await jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(user_id="dave", limit=100))
    assert [j.job_id for j in listed.jobs] == [replies[0].job_id]
    assert await _key_rows(jobs) == before + 1


async def test_deleting_the_job_frees_its_key(jobs: Running) -> None:
    first = await jobs.stub.CreateJob(keyed("erin", "again"))
    await jobs.stub.DeleteJob(jobs_pb2.DeleteJobRequest(user_id="erin", job_id=first.job_id))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id="erin", idempotency_key="again"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    second = await jobs.stub.CreateJob(keyed("erin", "again"))
    assert second.job_id != first.job_id


async def test_bad_keys_are_refused(jobs: Running) -> None:
    for bad in ("x" * 129, "a b", "a/b", "ключ", "k\n"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.stub.CreateJob(keyed("alice", bad))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "idempotency_key" in info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id="alice", idempotency_key=bad))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ok = await jobs.stub.CreateJob(keyed("alice", "A.b_c:d-" + "9" * 120))
    assert ok.job_id
