"""Outbox and fair dispatcher: the one way tasks reach the task stream.

CreateJob commits a job's tasks unpublished and asks for a pass; each pass claims, publishes and
marks tasks. Fair share: a user's tasks are published only while fewer than
RADIOLOGY_MAX_DISPATCHED_TASKS_PER_USER of theirs are published and unfinished; the rest wait in
the database, and each pass takes every user's oldest waiting task before anyone's second
(round-robin). So one user's backlog sits in the database, not in the stream ahead of another
user's job, which waits at most for the few tasks each user has in the stream. A pass runs when a
job is created, when task events finish tasks (freeing their users' slots), at start, and every
RADIOLOGY_OUTBOX_INTERVAL_SECONDS (a crash between commit and publish, NATS down).

A claim is a lease (claimed_at): a replica that dies between claiming and publishing leaves tasks
that are claimable again after CLAIM_LEASE_SECONDS. A task published twice (a crash after the
publish but before marking it) keeps its Nats-Msg-Id, so JetStream's duplicate window drops the
repeat, and processors treat a repeat idempotently anyway.
"""

from __future__ import annotations

import asyncio
import logging

from services.jobs import metrics
from services.jobs.publisher import TaskPublisher
from services.jobs.repository import Repository

log = logging.getLogger(__name__)

PAGE = 500
CLAIM_LEASE_SECONDS = 30.0
# CreateJob waits this long at most for the pass that publishes its tasks (the job is committed
# either way: a later pass publishes them).
CREATE_WAIT_SECONDS = 2.0


class Outbox:
    def __init__(self, repo: Repository, publisher: TaskPublisher, interval: float, cap: int = 0) -> None:
        self.repo = repo
        self.publisher = publisher
        self.interval = interval
        self.cap = max(0, cap)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """One pass: publish what the caps allow; returns how many tasks were published."""
        total = 0
        while True:
            pairs = await self.repo.claim_dispatchable(
                cap=self.cap, limit=PAGE, lease_seconds=CLAIM_LEASE_SECONDS
            )
            if not pairs:
                break
            published = await self.publisher.publish(pairs)
            await self.repo.mark_published(published)
            total += len(published)
            done = set(published)
            failed = [task.task_id for _, task in pairs if task.task_id not in done]
            if failed:  # NATS down or slow: claimable again by the next pass
                await self.repo.release_claims(failed)
                break
            if len(pairs) < PAGE and self.cap:
                break  # within the caps nothing more can go until tasks finish
        if total:
            log.debug("dispatched %d task(s)", total)
        return total

    def wake(self) -> None:
        """Ask for a pass soon (tasks finished, so their users have free slots)."""
        self._wake.set()

    async def dispatch(self) -> None:
        """Ask for a pass and wait (at most CREATE_WAIT_SECONDS) until one that started after this
        call has finished."""
        if self._task is None or self._task.done():
            return  # not running (stopping): the next start's first pass publishes
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(done), CREATE_WAIT_SECONDS)
        except TimeoutError:
            log.warning("tasks not dispatched within %.0fs; a later pass will", CREATE_WAIT_SECONDS)

    async def _run(self) -> None:
        self._wake.set()  # a pass at start
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping.is_set():
                break
            waiters, self._waiters = self._waiters, []
            try:
                await self.run_once()
            except Exception:
                log.exception("dispatch pass failed; next one in %.1fs", self.interval)
            finally:
                _release(waiters)
            # After the release: a CreateJob waiting for this pass does not wait for the gauge too.
            try:
                metrics.OUTBOX_UNPUBLISHED.set(await self.repo.count_unpublished())
            except Exception as exc:
                log.warning("counting unpublished tasks failed: %s", exc)
        _release(self._waiters)

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="jobs-outbox")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
