"""Outbox: tasks committed but never published (crash, NATS down) are published again.

Runs at start and every RADIOLOGY_OUTBOX_INTERVAL_SECONDS. A task that was in fact published
before a crash is published again with the same Nats-Msg-Id: JetStream's duplicate window drops
it, and processors treat a repeat idempotently anyway.
"""

from __future__ import annotations

import asyncio
import logging

from services.jobs import metrics
from services.jobs.publisher import TaskPublisher
from services.jobs.repository import Repository

log = logging.getLogger(__name__)

# CreateJob publishes its own tasks right after the commit; leave those to it.
MIN_AGE_SECONDS = 1.0
PAGE = 500


class Outbox:
    def __init__(self, repo: Repository, publisher: TaskPublisher, interval: float) -> None:
        self.repo = repo
        self.publisher = publisher
        self.interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, min_age: float = MIN_AGE_SECONDS) -> int:
        """Publish every unpublished pending task older than `min_age`; returns how many."""
        total = 0
        while True:
            pairs = await self.repo.unpublished_tasks(older_than=min_age, limit=PAGE)
            published = await self.publisher.publish(pairs)
            await self.repo.mark_published(published)
            total += len(published)
            if len(pairs) < PAGE or len(published) < len(pairs):
                break
        metrics.OUTBOX_UNPUBLISHED.set(await self.repo.count_unpublished())
        if total:
            log.info("outbox published %d task(s)", total)
        return total

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("outbox pass failed; retrying in %.1fs", self.interval)
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            except TimeoutError:
                pass

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="jobs-outbox")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
