"""Outbox: tasks committed but never published (crash, NATS down) are published again.

Runs at start and every RADIOLOGY_OUTBOX_INTERVAL_SECONDS. A task that was in fact published
before a crash is published again with the same Nats-Msg-Id: JetStream's duplicate window drops
it, and processors treat a repeat idempotently anyway.
"""

from __future__ import annotations

import logging

from services.jobs import metrics
from services.jobs.periodic import Periodic
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
        self._loop = Periodic("outbox", self.run_once, interval, at_start=True)

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

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
