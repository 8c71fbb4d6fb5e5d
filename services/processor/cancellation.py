"""Cancelled jobs: the jobs service announces them on core NATS; a running task drops its results
at its next step, and a task of such a job is acked without work."""

from __future__ import annotations

from collections import OrderedDict

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.common import messaging

# Job ids remembered; the oldest are forgotten first (a cancelled job's queued tasks are purged
# from the stream anyway, so only tasks already running need the notice).
MEMORY = 10_000


class JobCancelled(Exception):
    """The task's job was cancelled while it ran; its results are dropped."""


class CancelledJobs:
    def __init__(self, memory: int = MEMORY) -> None:
        self._memory = memory
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._sub: Subscription | None = None

    async def listen(self, nc: NATS) -> None:
        self._sub = await nc.subscribe(messaging.JOB_CANCELLED_SUBJECT, cb=self._on_notice)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._ids

    def check(self, job_id: str) -> None:
        """Raise JobCancelled when the job was cancelled."""
        if job_id in self._ids:
            raise JobCancelled

    async def _on_notice(self, msg: Msg) -> None:
        self.add(msg.data.decode("utf-8", "replace").strip())

    def add(self, job_id: str) -> None:
        if not job_id:
            return
        self._ids[job_id] = None
        self._ids.move_to_end(job_id)
        while len(self._ids) > self._memory:
            self._ids.popitem(last=False)
