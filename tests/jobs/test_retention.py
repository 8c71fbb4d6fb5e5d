"""Retention picks finished jobs older than the cutoff, oldest first, never unfinished ones."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from services.jobs import models
from services.jobs.models import utcnow
from services.jobs.repository import Repository
from services.jobs.retention import Retention

from .test_repository import FAILED, RUNNING, SUCCESS, create, ev, result_for


async def _age(repo: Repository, job_id: str, days: float) -> None:
    async with repo.engine.begin() as conn:
        await conn.execute(update(models.jobs).where(models.jobs.c.job_id == job_id)
                           .values(updated_at=utcnow() - timedelta(days=days)))


async def test_only_finished_jobs_older_than_the_cutoff_expire(repo: Repository) -> None:
    done, failed, cancelled, running, pending, recent = [await create(repo, "alice") for _ in range(6)]
    await repo.apply_events([ev(done.tasks[0], SUCCESS, 100, "stored", result=result_for(done.tasks[0]))])
    await repo.apply_events([ev(failed.tasks[0], FAILED, 100, "failed", error="bad")])
    await repo.cancel_job("alice", cancelled.job_id)
    await repo.apply_events([ev(running.tasks[0], RUNNING, 40, "decoded")])
    await repo.apply_events([ev(recent.tasks[0], SUCCESS, 100, "stored", result=result_for(recent.tasks[0]))])
    for job, days in ((done, 9), (failed, 10), (cancelled, 8), (running, 30), (pending, 30), (recent, 1)):
        await _age(repo, job.job_id, days)

    cutoff = utcnow() - timedelta(days=7)
    expired = await repo.expired_jobs(cutoff, 100)
    assert expired == [("alice", failed.job_id), ("alice", done.job_id), ("alice", cancelled.job_id)]
    assert await repo.expired_jobs(cutoff, 2) == expired[:2]


async def test_a_sweep_removes_each_expired_job_through_the_delete_path(repo: Repository) -> None:
    jobs = [await create(repo, "bob") for _ in range(3)]
    for job in jobs:
        await repo.cancel_job("bob", job.job_id)
    for job in jobs[:2]:
        await _age(repo, job.job_id, 2)
    removed: list[tuple[str, str]] = []

    async def remove(user: str, job_id: str) -> int:
        removed.append((user, job_id))
        await repo.delete_job(user, job_id)
        return 1

    assert set(await Retention(repo, remove, days=1, interval=60).sweep()) == {j.job_id for j in jobs[:2]}
    assert sorted(removed) == sorted(("bob", j.job_id) for j in jobs[:2])
    assert await repo.get_job("bob", jobs[2].job_id) is not None
