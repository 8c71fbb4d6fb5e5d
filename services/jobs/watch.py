"""Fan-out of "job changed" notices to WatchJob streams.

One core-NATS subscription per process (radiology.job-changed.*) wakes the local watchers of that
job, whichever jobs replica committed the change. Queues hold at most one wake-up: a watcher
re-reads the job anyway, so several changes in a row coalesce into one read.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.common import messaging

log = logging.getLogger(__name__)


class WatchHub:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._watchers: dict[str, set[asyncio.Queue[None]]] = defaultdict(set)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(f"{messaging.JOB_CHANGED_SUBJECT}.*", cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None and not self.nc.is_closed:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection may already be gone
                pass
        self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        self.wake(msg.subject.rsplit(".", 1)[-1])

    def subscribe(self, job_id: str) -> asyncio.Queue[None]:
        queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        self._watchers[job_id].add(queue)
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue[None]) -> None:
        queues = self._watchers.get(job_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._watchers[job_id]

    def wake(self, job_id: str) -> None:
        for queue in self._watchers.get(job_id, ()):
            if queue.empty():
                queue.put_nowait(None)

    @property
    def watcher_count(self) -> int:
        return sum(len(q) for q in self._watchers.values())

    async def announce(self, job_ids: set[str] | list[str]) -> None:
        """Tell every replica (and ourselves at once) that these jobs changed."""
        for job_id in job_ids:
            self.wake(job_id)
            try:
                await self.nc.publish(f"{messaging.JOB_CHANGED_SUBJECT}.{job_id}", job_id.encode())
            except Exception as exc:  # watchers still re-read on their safety-net timer
                log.warning("announcing job change failed: %s", exc, extra={"job_id": job_id})
