"""Retention: finished jobs older than RADIOLOGY_RETENTION_DAYS are deleted with all their files.

Every RADIOLOGY_RETENTION_INTERVAL_SECONDS the sweep asks the database for finished jobs (SUCCESS,
FAILED, CANCELLED) last changed before the cutoff and removes each through the same path as
DELETE /jobs/{id} (JobService.remove_job: the job's storage folder, then its rows). Jobs still
PENDING or RUNNING are never touched. Replicas may sweep at the same time: removing a folder or a
row twice changes nothing. A storage outage leaves the rows, and the next sweep retries.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from prometheus_client import Counter

from services.jobs.models import utcnow
from services.jobs.periodic import Periodic
from services.jobs.repository import Repository

log = logging.getLogger(__name__)

JOBS_EXPIRED = Counter("jobs_expired", "Finished jobs deleted by retention (RADIOLOGY_RETENTION_DAYS)")
# Jobs removed per database query; a sweep goes on until none is left.
BATCH = 100


class Retention:
    def __init__(self, repo: Repository, remove_job: Callable[[str, str], Awaitable[int]],
                 days: float, interval: float) -> None:
        self.repo = repo
        self.remove_job = remove_job
        self.days = days
        self._loop = Periodic("retention", self.sweep, interval, at_start=True)

    async def sweep(self) -> list[str]:
        """One pass; returns the ids of the jobs it removed."""
        cutoff = utcnow() - timedelta(days=self.days)
        removed: list[str] = []
        while True:
            expired = await self.repo.expired_jobs(cutoff, BATCH)
            for user_id, job_id in expired:
                objects = await self.remove_job(user_id, job_id)
                removed.append(job_id)
                JOBS_EXPIRED.inc()
                log.info("removed job and %d objects: finished more than %g days ago", objects, self.days,
                         extra={"job_id": job_id})
            if len(expired) < BATCH:
                return removed

    def start(self) -> None:
        if self.days > 0:  # 0: keep everything
            self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
