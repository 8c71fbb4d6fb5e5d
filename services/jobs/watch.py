"""Fan-out of job changes to WatchJob streams.

A change committed by this process reaches its local watchers as a ready-made snapshot (the Job
message built once from the rows the transaction just wrote), so a watcher needs no database read
per change. Every change is also announced on core NATS (radiology.job-changed.<job_id>, payload:
the announcing process's id) so that the watchers on other jobs replicas wake and re-read the job;
a process ignores its own announcements. Mailboxes hold at most one pending item: the newest
snapshot, or a request to re-read (which wins, because the database is never older).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.common import messaging
from services.common.gen.radiology.v1 import common_pb2
from services.common.status import TERMINAL

log = logging.getLogger(__name__)

Rank = tuple[int, int, int, int]


def job_rank(job: common_pb2.Job) -> Rank:
    """A value that grows with every change of a job and never shrinks (see docs/design.md: task
    progress never goes down, a task never goes back to PENDING, terminal states stay), so a
    snapshot older than one already sent can be recognised and skipped."""
    terminal = started = progress = 0
    for task in job.tasks:
        progress += task.progress
        if task.status != common_pb2.STATUS_PENDING:
            started += 1
            if task.status in TERMINAL:
                terminal += 1
    return terminal, started, progress, job.progress


class Watcher:
    """The mailbox of one WatchJob stream."""

    __slots__ = ("_ready", "snapshot", "rank", "reread")

    def __init__(self) -> None:
        self._ready = asyncio.Event()
        self.snapshot: common_pb2.Job | None = None
        self.rank: Rank | None = None
        self.reread = False

    def offer(self, snapshot: common_pb2.Job, rank: Rank) -> None:
        if self.rank is None or rank > self.rank:
            self.snapshot, self.rank = snapshot, rank
            self._ready.set()

    def request_reread(self) -> None:
        self.reread = True
        self._ready.set()

    async def next(self, timeout: float) -> common_pb2.Job | None:
        """The newest snapshot offered since the last call, or None when the job must be re-read
        from the database (asked for, or nothing arrived within `timeout`: the safety net)."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return None
        self._ready.clear()
        snapshot, reread = self.snapshot, self.reread
        self.snapshot, self.rank, self.reread = None, None, False
        return None if reread else snapshot


class WatchHub:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.origin = uuid.uuid4().hex.encode()
        self._watchers: dict[str, set[Watcher]] = defaultdict(set)
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
        if msg.data != self.origin:  # our own changes were delivered locally already
            self.wake(msg.subject.rsplit(".", 1)[-1])

    def subscribe(self, job_id: str) -> Watcher:
        watcher = Watcher()
        self._watchers[job_id].add(watcher)
        return watcher

    def unsubscribe(self, job_id: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(job_id)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[job_id]

    def watched(self, job_id: str) -> bool:
        return job_id in self._watchers

    def wake(self, job_id: str) -> None:
        """Make the local watchers of this job re-read it."""
        for watcher in self._watchers.get(job_id, ()):
            watcher.request_reread()

    @property
    def watcher_count(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    async def announce(self, job_ids: Iterable[str]) -> None:
        """These jobs changed (or were deleted): local watchers re-read them, other replicas too."""
        job_ids = list(job_ids)
        for job_id in job_ids:
            self.wake(job_id)
        await self._notify(job_ids)

    async def publish(self, job_ids: Iterable[str], snapshots: Iterable[common_pb2.Job]) -> None:
        """These jobs changed; `snapshots` are their committed states for the local watchers
        (only jobs watched here need one); other replicas are told to re-read."""
        for snapshot in snapshots:
            rank = job_rank(snapshot)
            for watcher in self._watchers.get(snapshot.job_id, ()):
                watcher.offer(snapshot, rank)
        await self._notify(job_ids)

    async def _notify(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            try:
                await self.nc.publish(f"{messaging.JOB_CHANGED_SUBJECT}.{job_id}", self.origin)
            except Exception as exc:  # watchers still re-read on their safety-net timer
                log.warning("announcing job change failed: %s", exc, extra={"job_id": job_id})
