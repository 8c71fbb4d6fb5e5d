"""Janitor: removes stored objects that no job owns.

A job's files are stored before its row exists (the gateway streams the upload, then calls
CreateJob), and a refused upload is cleaned up by the gateway itself. What is left is the rare
case in between: the gateway died mid-upload, or died while storage was unreachable for its
clean-up. Every RADIOLOGY_JANITOR_INTERVAL_SECONDS the janitor lists storage, groups keys by their
"{user_id}/{job_id}/" folder, and removes each folder whose job does not exist and whose newest
object is older than RADIOLOGY_ORPHAN_GRACE_SECONDS (far longer than any upload takes). Replicas
may sweep at the same time: every step is idempotent.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter

from services.common.keys import job_folder_of, job_prefix
from services.common.storage_client import StorageClient
from services.jobs.periodic import Periodic
from services.jobs.repository import Repository

log = logging.getLogger(__name__)

ORPHANS_REMOVED = Counter("jobs_orphan_folders_removed", "Storage folders removed because no job owned them")


def job_folders(keys_and_times: list[tuple[str, float]]) -> dict[tuple[str, str], float]:
    """(user_id, job_id) of each job folder -> its newest modification time; keys outside any job
    folder (keys.job_folder_of) are not the platform's and are left alone."""
    newest: dict[tuple[str, str], float] = {}
    for key, modified in keys_and_times:
        folder = job_folder_of(key)
        if folder is not None:
            newest[folder] = max(newest.get(folder, 0.0), modified)
    return newest


class Janitor:
    def __init__(self, repo: Repository, storage: StorageClient, interval: float, grace: float) -> None:
        self.repo = repo
        self.storage = storage
        self.interval = interval
        self.grace = grace
        self._loop = Periodic("janitor", self.sweep, interval, at_start=False)

    async def sweep(self) -> list[str]:
        """One pass; returns the folders it removed."""
        listed: list[tuple[str, float]] = []
        token = ""
        while True:
            page = await self.storage.list(page_token=token)
            listed += [(o.key, o.modified_at) for o in page.objects]
            token = page.next_page_token
            if not token:
                break
        cutoff = time.time() - self.grace
        old = [folder for folder, t in job_folders(listed).items() if t < cutoff]
        owned = await self.repo.existing_jobs([job_id for _, job_id in old])
        removed = []
        for user_id, job_id in old:
            if (user_id, job_id) in owned:
                continue
            folder = job_prefix(user_id, job_id)
            await self.storage.delete_prefix(folder)
            removed.append(folder)
            ORPHANS_REMOVED.inc()
            log.info("removed %s: no job owns it", folder, extra={"job_id": job_id})
        return removed

    def start(self) -> None:
        if self.interval > 0:  # 0: never
            self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
