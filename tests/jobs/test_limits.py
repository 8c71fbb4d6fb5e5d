"""Per-user limits and fair dispatch of the jobs service: the rules, the SQL on SQLite and
PostgreSQL (concurrent callers included), and the RPCs over real gRPC and a real nats-server."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.common import messaging
from services.common.gen.radiology.v1 import common_pb2, jobs_pb2, tasks_pb2
from services.common.refusals import limit_exceeded
from services.jobs import limits
from services.jobs.limits import LimitExceededError, UserLimits
from services.jobs.models import NewInput
from services.jobs.repository import Repository

from .harness import Running, StorageServer, start_jobs
from .test_service import create_request, send_event, stream_tasks, wait_for

T0 = datetime(2025, 1, 1, tzinfo=UTC)
L = jobs_pb2.LimitExceeded


# --- rules ---

def test_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    lim = UserLimits(per_minute=30, burst=5)
    assert limits.refill(0.0, T0, T0 + timedelta(seconds=4), lim) == pytest.approx(2.0)
    assert limits.refill(1.0, T0, T0 + timedelta(hours=1), lim) == 5.0
    assert limits.refill(1.0, T0, T0 - timedelta(seconds=9), lim) == 1.0  # a clock going back
    assert limits.seconds_to_next_token(0.25, lim) == pytest.approx(1.5)


def test_quota_rules() -> None:
    lim = UserLimits(max_active_jobs=2, max_stored_bytes=100)
    limits.check_quotas(limits.Usage("u", 1, 60, 0), lim, new_bytes=40)  # exactly the quota
    for usage, new, which in [((2, 0), 0, L.LIMIT_ACTIVE_JOBS), ((0, 60), 41, L.LIMIT_STORED_BYTES),
                              ((0, 100), 0, L.LIMIT_STORED_BYTES)]:
        with pytest.raises(LimitExceededError) as info:
            limits.check_quotas(limits.Usage("u", *usage, 0), lim, new_bytes=new)
        assert info.value.limit == which and info.value.detail
    assert limits.remaining_bytes(limits.Usage("u", 0, 70, 0), lim) == 30
    assert limits.remaining_bytes(limits.Usage("u", 0, 70, 0), UserLimits()) == -1
    limits.check_quotas(limits.Usage("u", 10**6, 10**15, 0), UserLimits())  # 0: no limit


# --- repository ---

def inputs(user: str, job_id: str, size: int, *names: str) -> list[NewInput]:
    return [NewInput(n, f"{user}/{job_id}/{n}", "png", size) for n in names]


async def create(repo: Repository, user: str, size: int = 10, lim: UserLimits | None = None,
                 names: tuple[str, ...] = ("a.png",)):  # type: ignore[no-untyped-def]
    job_id = str(uuid.uuid4())
    return await repo.create_job(job_id=job_id, user_id=user, task_type="blur", params={},
                                 inputs=inputs(user, job_id, size, *names), limits=lim)


async def test_admit_takes_tokens_until_the_bucket_is_empty(repo: Repository) -> None:
    lim = UserLimits(per_minute=0.6, burst=3)  # slow enough that the test's own time adds nothing
    taken = [(await repo.admit("alice", lim)).tokens for _ in range(3)]
    assert taken == pytest.approx([2, 1, 0], abs=0.01)
    with pytest.raises(LimitExceededError) as info:
        await repo.admit("alice", lim)
    assert info.value.limit == L.LIMIT_SUBMISSION_RATE
    assert 99 < info.value.retry_after <= 100.0  # 0.6 a minute: the next token in 100 s
    assert (await repo.admit("bob", lim)).tokens == pytest.approx(2, abs=0.01)  # per user
    assert (await repo.usage("alice", lim)).tokens < 1


async def test_a_quota_refusal_takes_no_token(repo: Repository) -> None:
    lim = UserLimits(per_minute=0.6, burst=2, max_active_jobs=1)
    await repo.admit("alice", lim)
    await create(repo, "alice")
    with pytest.raises(LimitExceededError) as info:
        await repo.admit("alice", lim)
    assert info.value.limit == L.LIMIT_ACTIVE_JOBS and info.value.usage.active_jobs == 1
    assert (await repo.usage("alice", lim)).tokens == pytest.approx(1, abs=0.01)


async def test_stored_bytes_count_inputs_and_outputs(repo: Repository) -> None:
    lim = UserLimits(max_stored_bytes=1000)
    job = await create(repo, "alice", size=300, names=("a.png", "b.png"))
    other = await create(repo, "bob", size=999)
    task = job.tasks[0]
    names = {f"{task.output_stem}_processed.png": 150, f"{task.output_stem}_input.png": 50}
    outputs = [common_pb2.Output(filename=name, key=f"alice/{job.job_id}/{name}", size=size,
                                 media_type="image/png", role="primary") for name, size in names.items()]
    result = common_pb2.TaskResult(input_file="a.png", output_file=outputs[0].filename, task_type="blur",
                                   outputs=outputs)
    await repo.apply_events([tasks_pb2.TaskEvent(task_id=task.task_id, job_id=job.job_id,
                                                 status=common_pb2.STATUS_SUCCESS, progress=100,
                                                 result=result)])
    usage = await repo.usage("alice", lim)
    assert (usage.stored_bytes, usage.active_jobs) == (800, 1)
    assert (await repo.usage("bob", lim)).stored_bytes == 999 and other
    with pytest.raises(LimitExceededError) as info:
        await create(repo, "alice", size=201, lim=lim)
    assert info.value.limit == L.LIMIT_STORED_BYTES
    await create(repo, "alice", size=200, lim=lim)  # exactly up to the quota
    assert (await repo.usage("alice", lim)).stored_bytes == 1000
    await repo.delete_job("alice", job.job_id)
    assert (await repo.usage("alice", lim)).stored_bytes == 200


async def test_a_retried_create_is_not_refused_by_its_own_quota(repo: Repository) -> None:
    lim = UserLimits(max_active_jobs=1)
    job_id = str(uuid.uuid4())
    args = {"job_id": job_id, "user_id": "alice", "task_type": "blur", "params": {},
            "inputs": inputs("alice", job_id, 1, "a.png"), "limits": lim}
    await repo.create_job(**args)
    from services.jobs.repository import JobExistsError

    with pytest.raises(JobExistsError):
        await repo.create_job(**args)


async def test_concurrent_creates_never_pass_a_quota_together(repo: Repository) -> None:
    """On PostgreSQL the calls really run at once (one connection each); the user's row lock makes
    the count-then-insert atomic."""
    lim = UserLimits(max_active_jobs=3)
    outcomes = await asyncio.gather(*(create(repo, "alice", lim=lim) for _ in range(12)),
                                    return_exceptions=True)
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 3
    assert all(isinstance(o, LimitExceededError) for o in outcomes if isinstance(o, BaseException))
    lim_bytes = UserLimits(max_stored_bytes=100)
    outcomes = await asyncio.gather(*(create(repo, "bob", size=30, lim=lim_bytes) for _ in range(8)),
                                    return_exceptions=True)
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 3
    assert (await repo.usage("bob", lim_bytes)).stored_bytes == 90


async def test_concurrent_admissions_take_each_token_once(repo: Repository) -> None:
    lim = UserLimits(per_minute=1, burst=5)
    outcomes = await asyncio.gather(*(repo.admit("carol", lim) for _ in range(12)), return_exceptions=True)
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 5


# --- the service ---

@pytest.fixture
async def limited(private_nats: Any, fake_storage: StorageServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    running = await start_jobs(
        private_nats.url, fake_storage.addr, tmp_path / "jobs.db",
        rate_limit_per_minute=60, rate_limit_burst=3, max_active_jobs_per_user=2,
        max_stored_bytes_per_user=100, max_dispatched_tasks_per_user=2, outbox_interval_seconds=30,
    )
    await running.js.purge_stream(messaging.TASKS_STREAM)
    yield running
    for close in running._closers:
        await close()


def refusal(exc: grpc.aio.AioRpcError) -> jobs_pb2.LimitExceeded:
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    found = limit_exceeded(exc.trailing_metadata())
    assert found is not None, exc.trailing_metadata()
    return found


async def test_admit_and_usage_over_grpc(limited: Running) -> None:
    stub = limited.stub
    first = await stub.AdmitSubmission(jobs_pb2.AdmitSubmissionRequest(user_id="alice"))
    assert first.remaining_bytes == 100 and first.usage.submissions_available == 2
    assert first.usage.limits == jobs_pb2.UsageLimits(
        submissions_per_minute=60, submission_burst=3, max_active_jobs=2, max_stored_bytes=100)
    await stub.AdmitSubmission(jobs_pb2.AdmitSubmissionRequest(user_id="alice"))
    await stub.AdmitSubmission(jobs_pb2.AdmitSubmissionRequest(user_id="alice"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.AdmitSubmission(jobs_pb2.AdmitSubmissionRequest(user_id="alice"))
    why = refusal(info.value)
    assert why.limit == L.LIMIT_SUBMISSION_RATE and 0 < why.retry_after_seconds <= 1.0
    assert "a minute" in info.value.details()

    await stub.CreateJob(create_request("bob", "a.png"))  # 5 bytes
    await stub.CreateJob(create_request("bob", "b.png"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateJob(create_request("bob", "c.png"))
    assert refusal(info.value).limit == L.LIMIT_ACTIVE_JOBS
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.AdmitSubmission(jobs_pb2.AdmitSubmissionRequest(user_id="bob"))
    assert refusal(info.value).usage.active_jobs == 2
    usage = await stub.GetUsage(jobs_pb2.GetUsageRequest(user_id="bob"))
    got = (usage.user_id, usage.active_jobs, usage.stored_bytes, usage.submissions_available)
    assert got == ("bob", 2, 10, 3)

    big = create_request("carol", "big.png")
    big.inputs[0].size = 101
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateJob(big)
    assert refusal(info.value).limit == L.LIMIT_STORED_BYTES
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetJob(jobs_pb2.GetJobRequest(user_id="carol", job_id=big.job_id))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # nothing recorded
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetUsage(jobs_pb2.GetUsageRequest(user_id="../x"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_fair_dispatch_publishes_a_users_share_and_more_as_tasks_finish(limited: Running) -> None:
    stub = limited.stub
    flood = await stub.CreateJob(create_request("alice", *(f"a{i}.png" for i in range(6))))
    assert len(await stream_tasks(limited, flood.job_id)) == 2  # her share; the rest wait
    small = await stub.CreateJob(create_request("bob", "b.png"))
    assert len(await stream_tasks(limited, small.job_id)) == 1  # not behind alice's four
    # Two of hers finish: the event consumer wakes the dispatcher (its timer is 30 s here).
    published = {m.task_id for _, m in await stream_tasks(limited, flood.job_id)}
    for task in flood.tasks:
        if task.task_id in published:
            await send_event(limited, task, common_pb2.STATUS_FAILED, 100, error="bad input")

    async def four() -> bool:
        return len(await stream_tasks(limited, flood.job_id)) == 4

    started = time.monotonic()
    await wait_for(four, 3)
    assert time.monotonic() - started < 2.0
    # Cancelling frees her slots too.
    await stub.CancelJob(jobs_pb2.CancelJobRequest(user_id="alice", job_id=flood.job_id))
    assert await limited.app.repo.count_unpublished() == 0
