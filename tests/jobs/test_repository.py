"""Repository on SQLite and PostgreSQL: create/get/list, isolation, idempotent events, fair dispatch."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from services.common.gen.radiology.v1 import common_pb2, tasks_pb2
from services.jobs import models
from services.jobs.models import JobState, NewInput, TaskState
from services.jobs.repository import InvalidCursorError, JobExistsError, Repository


def inputs(user: str, job_id: str, *names: str) -> list[NewInput]:
    return [NewInput(n, f"{user}/{job_id}/{n}", "png", 10) for n in names]


async def create(repo: Repository, user: str, *names: str, job_id: str | None = None) -> JobState:
    job_id = job_id or str(uuid.uuid4())
    return await repo.create_job(
        job_id=job_id, user_id=user, task_type="blur", params={"sigma": 2.0},
        inputs=inputs(user, job_id, *(names or ("scan.png",))),
    )


def ev(task: TaskState, status: int, progress: int, message: str = "", **kw) -> tasks_pb2.TaskEvent:
    return tasks_pb2.TaskEvent(task_id=task.task_id, job_id=task.job_id, status=status, progress=progress,
                               message=message, **kw)


RUNNING, SUCCESS, FAILED = common_pb2.STATUS_RUNNING, common_pb2.STATUS_SUCCESS, common_pb2.STATUS_FAILED


def result_for(task: TaskState) -> common_pb2.TaskResult:
    return common_pb2.TaskResult(
        input_file=task.input_file, output_file=f"{task.output_stem}_processed.png", task_type="blur",
        outputs=[common_pb2.Output(
            filename=f"{task.output_stem}_processed.png", size=123, role="primary", media_type="image/png",
            key=f"{task.user_id}/{task.job_id}/{task.output_stem}_processed.png",
        )],
    )


async def test_create_and_get(repo: Repository) -> None:
    job = await create(repo, "alice", "a.png", "a.dcm", "a_processed.png")
    got = await repo.get_job("alice", job.job_id)
    assert got is not None
    assert (got.status, got.progress, got.task_type, got.params) == ("PENDING", 0, "blur", {"sigma": 2.0})
    assert [t.input_file for t in got.tasks] == ["a.png", "a.dcm", "a_processed.png"]
    assert all(not t.published and t.status == "PENDING" for t in got.tasks)
    assert got.created_at.tzinfo is not None
    stems = [t.output_stem for t in got.tasks]
    assert len(set(stems)) == 3 and "a" not in stems  # a_processed.png is an input
    task = await repo.get_task("alice", got.tasks[1].task_id)
    assert task is not None and task.input_key == f"alice/{job.job_id}/a.dcm"


async def test_same_job_id_twice_is_rejected(repo: Repository) -> None:
    job = await create(repo, "alice")
    with pytest.raises(JobExistsError) as info:
        await create(repo, "bob", job_id=job.job_id)
    assert info.value.job is not None and info.value.job.user_id == "alice"
    assert await repo.get_job("bob", job.job_id) is None


async def test_isolation(repo: Repository) -> None:
    job = await create(repo, "alice", "x.png")
    task_id = job.tasks[0].task_id
    assert await repo.get_job("bob", job.job_id) is None
    assert await repo.get_task("bob", task_id) is None
    assert await repo.list_jobs("bob") == ([], "")
    assert await repo.cancel_job("bob", job.job_id) == (None, False)
    assert await repo.delete_job("bob", job.job_id) is False
    still = await repo.get_job("alice", job.job_id)
    assert still is not None and still.status == "PENDING"


async def test_list_newest_first_with_cursor_and_status(repo: Repository) -> None:
    user = f"u{uuid.uuid4().hex[:8]}"
    jobs = [await create(repo, user) for _ in range(7)]
    base = datetime(2025, 1, 1, tzinfo=UTC)
    # Controlled times; jobs 3 and 4 share one, so the job_id tie-break is exercised at a page edge.
    times = [base + timedelta(seconds=s) for s in (0, 1, 2, 3, 3, 5, 6)]
    async with repo.engine.begin() as conn:
        for job, t in zip(jobs, times, strict=True):
            stmt = update(models.jobs).where(models.jobs.c.job_id == job.job_id).values(created_at=t)
            await conn.execute(stmt)
    expected = [j.job_id for j, _ in sorted(zip(jobs, times, strict=True),
                                             key=lambda p: (p[1], p[0].job_id), reverse=True)]

    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page, cursor = await repo.list_jobs(user, limit=3, cursor=cursor)
        pages += 1
        seen += [j.job_id for j in page]
        assert all(j.tasks for j in page)  # tasks come with the jobs
        if not cursor:
            break
    assert seen == expected and pages == 3

    await repo.cancel_job(user, jobs[2].job_id)
    cancelled, nxt = await repo.list_jobs(user, status="CANCELLED")
    assert [j.job_id for j in cancelled] == [jobs[2].job_id] and nxt == ""
    pending, _ = await repo.list_jobs(user, status="PENDING", limit=100)
    assert len(pending) == 6

    with pytest.raises(InvalidCursorError):
        await repo.list_jobs(user, cursor="not-a-cursor!")
    with pytest.raises(ValueError):
        await repo.list_jobs(user, limit=101)


async def test_events_are_idempotent_and_monotonic(repo: Repository) -> None:
    job = await create(repo, "alice", "one.png", "two.png")
    t1, t2 = job.tasks

    r = await repo.apply_events([ev(t1, RUNNING, 10, "fetched"), ev(t1, RUNNING, 40, "decoded")])
    assert r.applied == 2 and r.job_ids == {job.job_id}
    got = await repo.get_job("alice", job.job_id)
    assert got is not None
    assert (got.status, got.progress) == ("RUNNING", 20)
    task = got.tasks[0]
    assert (task.status, task.progress, task.message) == ("RUNNING", 40, "decoded")
    assert task.started_at is not None

    # Duplicate and late (lower) progress: nothing changes, and the job is not reported as touched.
    r = await repo.apply_events([ev(t1, RUNNING, 40, "decoded"), ev(t1, RUNNING, 10, "fetched")])
    assert r.applied == 0 and r.job_ids == set()
    task = await repo.get_task("alice", t1.task_id)
    assert task is not None and (task.progress, task.message) == (40, "decoded")

    r = await repo.apply_events([ev(t1, SUCCESS, 100, "stored", result=result_for(t1))])
    assert r.applied == 1
    # A late RUNNING, a repeated SUCCESS and a FAILED after SUCCESS: the task stays as it was.
    r = await repo.apply_events([
        ev(t1, RUNNING, 70, "processed"), ev(t1, SUCCESS, 100, "stored again"),
        ev(t1, FAILED, 100, "boom", error="boom"),
    ])
    assert r.applied == 0
    task = await repo.get_task("alice", t1.task_id)
    assert task is not None
    assert (task.status, task.progress, task.message, task.error) == ("SUCCESS", 100, "stored", "")
    assert task.result is not None and task.result["output_file"] == f"{t1.output_stem}_processed.png"
    assert task.finished_at is not None

    got = await repo.get_job("alice", job.job_id)
    assert got is not None and (got.status, got.progress, got.message) == ("RUNNING", 50, "1 of 2 tasks done")

    # Unknown task, and an event naming the wrong job: ignored.
    bogus = tasks_pb2.TaskEvent(task_id=str(uuid.uuid4()), status=SUCCESS, progress=100)
    wrong_job = tasks_pb2.TaskEvent(task_id=t2.task_id, job_id=str(uuid.uuid4()), status=RUNNING, progress=10)
    assert (await repo.apply_events([bogus, wrong_job])).applied == 0


async def test_failed_task_fails_job_and_keeps_other_result(repo: Repository) -> None:
    job = await create(repo, "alice", "good.png", "bad.dcm")
    good, bad = job.tasks
    await repo.apply_events([
        ev(good, RUNNING, 10), ev(bad, RUNNING, 10),
        ev(good, SUCCESS, 100, "stored", result=result_for(good)),
    ])
    await repo.apply_events([ev(bad, FAILED, 40, "failed", error="DICOM pixel data is truncated")])
    got = await repo.get_job("alice", job.job_id)
    assert got is not None
    assert got.status == "FAILED" and got.progress == 100
    assert got.message == "bad.dcm: DICOM pixel data is truncated"
    g, b = got.tasks
    assert g.status == "SUCCESS" and g.result is not None and g.result["input_file"] == "good.png"
    assert b.status == "FAILED" and b.error == "DICOM pixel data is truncated" and b.result is None


async def test_cancel_then_events_change_nothing(repo: Repository) -> None:
    job = await create(repo, "alice", "a.png", "b.png")
    a, b = job.tasks
    await repo.apply_events([ev(a, SUCCESS, 100, result=result_for(a))])
    cancelled, changed = await repo.cancel_job("alice", job.job_id)
    assert changed and cancelled is not None
    assert cancelled.status == "CANCELLED" and [t.status for t in cancelled.tasks] == ["SUCCESS", "CANCELLED"]
    assert (await repo.apply_events([ev(b, RUNNING, 10), ev(b, SUCCESS, 100)])).applied == 0
    again, changed = await repo.cancel_job("alice", job.job_id)
    assert not changed and again is not None and again.status == "CANCELLED"


async def test_concurrent_batches_keep_progress_monotonic(repo: Repository) -> None:
    job = await create(repo, "alice", *(f"f{i}.png" for i in range(4)))
    batches = [[ev(t, RUNNING, p) for t in job.tasks] for p in (10, 40, 70)]
    await asyncio.gather(*(repo.apply_events(b) for b in reversed(batches)))
    got = await repo.get_job("alice", job.job_id)
    assert got is not None
    assert [t.progress for t in got.tasks] == [70] * 4 and got.progress == 70


async def test_delete_removes_tasks(repo: Repository) -> None:
    job = await create(repo, "alice", "a.png", "b.png")
    assert await repo.delete_job("alice", job.job_id) is True
    assert await repo.get_job("alice", job.job_id) is None
    assert await repo.get_task("alice", job.tasks[0].task_id) is None  # ON DELETE CASCADE
    assert await repo.delete_job("alice", job.job_id) is False


async def claim(repo: Repository, cap: int = 0, limit: int = 100, lease: float = 30.0) -> list[str]:
    return [t.task_id for _, t in await repo.claim_dispatchable(cap=cap, limit=limit, lease_seconds=lease)]


async def test_dispatch_claims_and_publishes_once(repo: Repository) -> None:
    job = await create(repo, "alice", "a.png", "b.png")
    pairs = await repo.claim_dispatchable(cap=0, limit=100, lease_seconds=30)
    assert [t.task_id for _, t in pairs] == [t.task_id for t in job.tasks]
    assert pairs[0][0].task_type == "blur"
    assert await claim(repo) == []  # claimed: no other pass takes them within the lease
    assert await repo.count_unpublished() == 2
    await repo.mark_published([job.tasks[0].task_id])
    await repo.release_claims([t.task_id for t in job.tasks])  # the second one's publish failed
    assert await claim(repo) == [job.tasks[1].task_id]
    await repo.release_claims([job.tasks[1].task_id])
    await repo.cancel_job("alice", job.job_id)  # a cancelled task is never published
    assert await claim(repo) == [] and await repo.count_unpublished() == 0


async def test_dispatch_lease_expires(repo: Repository) -> None:
    job = await create(repo, "alice", "a.png")
    assert await claim(repo) == [job.tasks[0].task_id]
    # The claimer died before publishing: after the lease, another pass takes the task.
    assert await claim(repo, lease=0.0) == [job.tasks[0].task_id]


async def test_dispatch_caps_each_user_and_goes_round_robin(repo: Repository) -> None:
    flood = [await create(repo, "alice", *(f"a{i}.png" for i in range(5))) for _ in range(3)]
    small = await create(repo, "bob", "b.png")
    later = await create(repo, "carol", "c1.png", "c2.png", "c3.png")
    alice = [t.task_id for j in flood for t in j.tasks]
    first = await claim(repo, cap=2)
    # Every user's oldest before anyone's second; then the second of those who have one.
    assert first == [alice[0], small.tasks[0].task_id, later.tasks[0].task_id,
                     alice[1], later.tasks[1].task_id]
    await repo.mark_published(first)
    assert await claim(repo, cap=2) == []  # every user is at their cap
    # Two of alice's tasks finish: two more of hers go, her oldest waiting first.
    await repo.apply_events([ev(flood[0].tasks[0], SUCCESS, 100, result=result_for(flood[0].tasks[0])),
                             ev(flood[0].tasks[1], FAILED, 100, error="bad")])
    assert await claim(repo, cap=2) == alice[2:4]
    assert await claim(repo, cap=2) == []
    assert await claim(repo, cap=2, lease=0.0) == alice[2:4]  # claims whose lease is over go again
    # A running task holds a slot whether or not it was marked published.
    await repo.apply_events([ev(small.tasks[0], RUNNING, 40)])
    async with repo.engine.begin() as conn:
        await conn.execute(update(models.tasks).where(models.tasks.c.task_id == small.tasks[0].task_id)
                           .values(published=False))
    assert await claim(repo, cap=1) == []
    assert len(await claim(repo, cap=0, lease=0.0)) == 15 - 2 + 1  # no cap: every waiting task


async def test_limit_caps_a_pass(repo: Repository) -> None:
    await create(repo, "alice", *(f"a{i}.png" for i in range(4)))
    assert len(await claim(repo, limit=3)) == 3
    assert len(await claim(repo, limit=3)) == 1


async def test_one_job_per_idempotency_key_even_when_racing(repo: Repository) -> None:
    """Concurrent creates with one key: the key's uniqueness (not a prior read) decides; every
    loser gets the winner's job, and another user's key is another key."""

    async def keyed(user: str, key: str) -> JobState:
        job_id = str(uuid.uuid4())
        try:
            return await repo.create_job(
                job_id=job_id, user_id=user, task_type="blur", params={},
                inputs=inputs(user, job_id, "a.png"),
                idempotency_key=key,
            )
        except JobExistsError as exc:
            assert exc.job is not None and exc.job.user_id == user
            return exc.job

    jobs = await asyncio.gather(*(keyed("alice", "same") for _ in range(6)))
    assert len({j.job_id for j in jobs}) == 1
    listed, _ = await repo.list_jobs("alice")
    assert [j.job_id for j in listed] == [jobs[0].job_id]
    found = await repo.get_job_by_key("alice", "same")
    assert found is not None and found.job_id == jobs[0].job_id
    assert await repo.get_job_by_key("bob", "same") is None
    bob = await keyed("bob", "same")
    assert bob.job_id != jobs[0].job_id
    assert await repo.delete_job("alice", jobs[0].job_id)
    assert await repo.get_job_by_key("alice", "same") is None  # the key went with its job
