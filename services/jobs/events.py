"""Consumer of task events: durable pull consumer "jobs" on the events stream.

nats-py's fetch(n) waits for the whole batch (or its timeout) once a long poll has started, which
would add a hidden delay to every event. So this loop keeps one pull request of up to BATCH
messages open on the consumer's inbox and applies whatever has arrived the moment anything arrives:
one event is applied at once, a burst is applied as one batch and one transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import BadRequestError

from services.common import messaging
from services.common.gen.radiology.v1 import tasks_pb2
from services.common.storage_client import StorageClient
from services.jobs import metrics
from services.jobs.convert import job_to_proto
from services.jobs.repository import Repository
from services.jobs.watch import WatchHub

log = logging.getLogger(__name__)

BATCH = 256
# A pull request lives this long; the server sends an idle heartbeat every HEARTBEAT_SECONDS, so a
# silence of MISSED_HEARTBEATS beats (NATS restarted, request lost) makes us send a fresh request.
PULL_EXPIRES_SECONDS = 30.0
HEARTBEAT_SECONDS = 1.0
MISSED_HEARTBEATS = 2.5
ACK_WAIT_SECONDS = 30.0
MAX_DELIVER = -1  # events are never dropped because the database was down for a while
DB_RETRY_SECONDS = 1.0


class EventConsumer:
    def __init__(
        self, nc: NATS, repo: Repository, hub: WatchHub, storage: StorageClient | None = None,
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        self.on_finished = on_finished  # tasks became terminal (the dispatcher's cue)
        self.nc = nc
        self.js = nc.jetstream()
        self.repo = repo
        self.hub = hub
        self.storage = storage
        self._cleanups: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._applying = False

    async def ensure_consumer(self) -> None:
        config = messaging.consumer_config(
            messaging.JOBS_DURABLE, messaging.EVENTS_SUBJECT,
            ack_wait=ACK_WAIT_SECONDS, max_deliver=MAX_DELIVER, max_ack_pending=10_000,
        )
        try:
            await self.js.add_consumer(messaging.EVENTS_STREAM, config)
        except BadRequestError as exc:  # exists with another config: keep the operator's
            log.warning("consumer %s not updated: %s", messaging.JOBS_DURABLE, exc)

    async def start(self) -> None:
        await self.ensure_consumer()
        self._task = asyncio.create_task(self._run(), name="jobs-events")

    async def stop(self) -> None:
        """Stop after the batch being applied (if any); unacked messages are redelivered."""
        self._stopping.set()
        if self._task is None:
            return
        if not self._applying:
            self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def _run(self) -> None:
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{messaging.EVENTS_STREAM}.{messaging.JOBS_DURABLE}"
        request = json.dumps({
            "batch": BATCH,
            "expires": int(PULL_EXPIRES_SECONDS * 1e9),
            "idle_heartbeat": int(HEARTBEAT_SECONDS * 1e9),
        }).encode()
        remaining = 0  # messages the open pull request may still deliver
        deadline = 0.0
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if remaining <= 0 or now >= deadline:
                    await self.nc.publish(next_subject, request, reply=inbox)
                    remaining, deadline = BATCH, now + PULL_EXPIRES_SECONDS
                try:
                    first = await sub.next_msg(timeout=HEARTBEAT_SECONDS * MISSED_HEARTBEATS)
                except NatsTimeoutError:
                    remaining = 0
                    continue
                msgs = [first]
                while sub.pending_msgs > 0 and len(msgs) < BATCH:
                    msgs.append(await sub.next_msg(timeout=0.1))
                events, remaining = self._split(msgs, remaining)
                if events:
                    self._applying = True
                    try:
                        await self._apply(events)
                    finally:
                        self._applying = False
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # connection already closed
                pass

    def _split(self, msgs: list[Msg], remaining: int) -> tuple[list[Msg], int]:
        """Separate deliveries from status messages (408 expired, 409, 100 heartbeat)."""
        events = []
        for msg in msgs:
            status = msg.headers.get("Status") if msg.headers else None
            if status:
                if status != "100":
                    remaining = 0  # this pull request is over; send another
                continue
            events.append(msg)
            remaining -= 1
        return events, remaining

    async def _apply(self, msgs: list[Msg]) -> None:
        decoded: list[tuple[Msg, tasks_pb2.TaskEvent]] = []
        for msg in msgs:
            try:
                event = tasks_pb2.TaskEvent.FromString(msg.data)
                if not event.task_id:
                    raise DecodeError("no task_id")
            except DecodeError as exc:
                log.error("dropping undecodable task event on %s: %s", msg.subject, exc)
                await _quietly(msg.term())
                continue
            decoded.append((msg, event))
        if not decoded:
            return
        try:
            result = await self.repo.apply_events([event for _, event in decoded])
        except Exception:
            if await self._database_reachable():
                # The database is fine, so some event in the batch is bad: one by one, the bad
                # one is dropped and the others (other users' jobs) go through.
                if len(decoded) == 1:
                    await self._drop(*decoded[0])
                else:
                    for msg, _ in decoded:
                        await self._apply([msg])
                return
            # Not acked: JetStream redelivers them once the database is back.
            log.exception("applying %d task events failed; they will be redelivered", len(decoded))
            for msg, _ in decoded:
                await _quietly(msg.nak(delay=DB_RETRY_SECONDS))
            await asyncio.sleep(DB_RETRY_SECONDS)
            return
        for msg, _ in decoded:
            await _quietly(msg.ack())
        if result.finished and self.on_finished is not None:
            self.on_finished()
        if result.orphan_keys and self.storage is not None:
            cleanup = asyncio.create_task(self._remove_orphans(result.orphan_keys))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
        metrics.EVENT_BATCH_SIZE.observe(len(decoded))
        metrics.TASK_EVENTS_APPLIED.inc(result.applied)
        # Built once per changed job, and only for jobs someone watches in this process.
        snapshots = [job_to_proto(job) for job in result.jobs if self.hub.watched(job.job_id)]
        await self.hub.publish(result.job_ids, snapshots)

    async def _database_reachable(self) -> bool:
        try:
            await self.repo.ping()
        except Exception:
            return False
        return True

    async def _drop(self, msg: Msg, event: tasks_pb2.TaskEvent) -> None:
        log.exception("dropping a task event that cannot be applied", extra={"task_id": event.task_id})
        await _quietly(msg.term())

    async def _remove_orphans(self, keys: list[str]) -> None:
        """Outputs a processor stored for a job deleted meanwhile: nothing else would remove them."""
        assert self.storage is not None
        for key in keys:
            try:
                await self.storage.delete(key)
                log.info("removed output %s of a deleted job", key)
            except Exception as exc:
                log.warning("could not remove output %s of a deleted job: %s", key, exc)


async def _quietly(coro: object) -> None:
    try:
        await coro  # type: ignore[misc]
    except Exception as exc:  # an ack lost to a disconnect means a harmless redelivery
        log.warning("ack failed: %s", exc)
