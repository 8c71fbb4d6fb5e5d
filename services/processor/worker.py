"""The JetStream consumer: pulls TaskMessages from the durable consumer every processor replica
shares, runs each through the task pipeline, and settles its message.

Settling: success and deterministic failures (FAILED event) are acked. A transient failure
(storage, NATS, a dead pool process) never fails a task: it is nak'd with a delay doubling up to
RADIOLOGY_RETRY_BACKOFF_MAX_SECONDS, for as many deliveries as it takes (the consumer's max_deliver
is unlimited by default); only a task past RADIOLOGY_TASK_DEADLINE_SECONDS since its creation
fails ("not finished within the task deadline of 6 h"). While storage is unreachable this replica
pulls no new task and probes storage's health every RADIOLOGY_STORAGE_PROBE_SECONDS, resuming at
the first SERVING answer.
The durable consumer is the jobs service's: only it may create or change it (a processor's NATS user
may read its info, pull from it and ack its messages: services/common/nats_auth.py). A replica waits
for it at start and, should it go missing, reports not ready until the jobs service's reconciler has
re-created it.
While a task runs, its message is kept alive (in_progress every third of the consumer's ack_wait).
Drain stops fetching, gives in-flight tasks the grace period and hands the rest back (nak) to
another replica.

One task id runs at most once at a time here: a redelivery of a message a running attempt holds
(its keep-alive was frozen, e.g. SIGSTOP past ack_wait) is left to that attempt, another copy of a
running task (a republish by the jobs service's reconciler) is acked, and a task this replica
finished recently is acked without running again (see _Attempts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from concurrent.futures.process import BrokenProcessPool

import grpc
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import context as otel_context

from services.common import logging as log_ctx
from services.common import messaging, tracing
from services.common.config import Settings
from services.common.deadlines import deadline_error
from services.common.gen.radiology.v1 import common_pb2, tasks_pb2
from services.common.storage_client import StorageClient
from services.processor import metrics, scratch
from services.processor.cancellation import CancelledJobs, JobCancelled
from services.processor.events import TaskEvents
from services.processor.pipeline import TaskFailed, TaskPipeline
from services.processor.pool import ProcessPool

log = logging.getLogger(__name__)

# A lingering fetch returns as soon as one message arrives; this only bounds how long drain waits.
FETCH_TIMEOUT = 1.0
QUEUE_DEPTH_INTERVAL = 5.0
# How often the durable consumer is checked (an operator or a NATS data loss may remove it; the jobs
# service re-creates it) and its ack_wait read.
CONSUMER_CHECK_INTERVAL = 5.0
# Task ids this replica finished, remembered to drop a late copy of one (see _Attempts).
RECENTLY_SETTLED = 10_000

# Storage unreachable: the task waits (up to its deadline) and the replica stops pulling.
_OUTAGE_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
# An error from a storage that answers (a stream cut by a restart, or a fault with this one
# object): retried while storage is down, else at most STORAGE_ERROR_ATTEMPTS times here.
_ERROR_GRPC = {grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
               grpc.StatusCode.CANCELLED}
STORAGE_ERROR_ATTEMPTS = 5
_TRANSIENT_NATS = (
    nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError,
    nats.errors.OutboundBufferLimitError, nats.js.errors.ServiceUnavailableError,
)


async def subscribe(js: JetStreamContext) -> JetStreamContext.PullSubscription:
    """Bind to the durable consumer shared by every processor replica, once the jobs service has
    created it (messaging.ensure_task_consumer)."""
    await messaging.wait_for_task_consumer(js)
    return await js.pull_subscribe_bind(
        durable=messaging.PROCESSOR_DURABLE, stream=messaging.TASKS_STREAM
    )


class Worker:
    def __init__(self, *, settings: Settings, nc: NATS, sub: JetStreamContext.PullSubscription,
                 storage: StorageClient, pool: ProcessPool, drain_grace: float | None = None,
                 queue_depth_interval: float = QUEUE_DEPTH_INTERVAL) -> None:
        self._settings = settings
        self._nc = nc
        self._sub = sub
        self._concurrency = max(1, settings.task_concurrency)
        # Leave run_server's own drain deadline room for the naks that follow.
        self._drain_grace = (drain_grace if drain_grace is not None
                             else max(0.0, settings.shutdown_grace_seconds - 2.0))
        self._tmp_root = scratch.process_tmp_dir(settings.data_dir)
        self._queue_depth_interval = queue_depth_interval
        self._events = TaskEvents(nc.jetstream())
        self.cancelled = CancelledJobs()
        self._pipeline = TaskPipeline(storage=storage, pool=pool, events=self._events,
                                      cancelled=self.cancelled, tmp_root=self._tmp_root)
        self._active: set[asyncio.Task[None]] = set()
        self._slot_free = asyncio.Event()
        self._slot_free.set()
        self._stopping = False
        self._background: list[asyncio.Task[None]] = []
        self._fetcher: asyncio.Task[None] | None = None
        self._js = nc.jetstream()
        self._storage = storage
        self._storage_ok = asyncio.Event()
        self._storage_ok.set()
        self._probe: asyncio.Task[None] | None = None
        self.attempts = _Attempts()
        # Messages nak'd back to the stream by drain (for logs and tests).
        self.handed_back = 0
        # The consumer's ack_wait (the jobs service sets it), read at start and at every check.
        self.ack_wait = settings.ack_wait_seconds
        self._consumer_missing = False
        self.consumer_rebound = 0

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.consumer_problem()  # reads the consumer's ack_wait before the first task
        await asyncio.to_thread(scratch.sweep_stale, self._tmp_root)
        await self.cancelled.listen(self._nc)
        self._fetcher = asyncio.create_task(self._fetch_loop(), name="task-fetcher")
        self._background.append(asyncio.create_task(
            metrics.track_queue_depth(lambda: self._sub, self._queue_depth_interval, lambda: self._stopping),
            name="queue-depth"))
        self._background.append(asyncio.create_task(self._watch_consumer(), name="consumer-check"))

    @property
    def storage_available(self) -> bool:
        return self._storage_ok.is_set()

    async def consumer_problem(self) -> str | None:
        """For readiness: the durable consumer is missing (the jobs service re-creates it). Also
        keeps `ack_wait` up to date with the consumer's own."""
        try:
            info = await self._js.consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
        except nats.js.errors.NotFoundError:
            return (f"consumer {messaging.PROCESSOR_DURABLE} of stream {messaging.TASKS_STREAM} is "
                    "missing (waiting for the jobs service to re-create it)")
        if info.config.ack_wait:
            self.ack_wait = info.config.ack_wait
        return None

    async def _watch_consumer(self) -> None:
        # drain() cancels it, and the flag ends it too: on Python 3.11 a cancellation that arrives
        # as a NATS request's reply does is lost inside asyncio.wait_for.
        while not self._stopping:
            await asyncio.sleep(CONSUMER_CHECK_INTERVAL)
            if self._stopping:
                return
            try:
                problem = await self.consumer_problem()
                if problem is not None:
                    if not self._consumer_missing:
                        log.warning("%s; no task is pulled until it is back", problem)
                    self._consumer_missing = True
                    continue
                if self._consumer_missing:
                    self._sub = await subscribe(self._js)
                    self._consumer_missing = False
                    self.consumer_rebound += 1
                    log.warning("durable consumer %s is back: pulling tasks", messaging.PROCESSOR_DURABLE)
            except Exception as exc:  # NATS down: the next check tries again
                log.debug("consumer check failed: %s", exc)

    async def drain(self) -> None:
        """Stop fetching; give in-flight tasks the grace period, then hand the rest back (nak)."""
        if self._stopping:
            return
        self._stopping = True
        self._slot_free.set()
        deadline = time.monotonic() + self._drain_grace
        if self._fetcher is not None:
            await self._fetcher  # returns within FETCH_TIMEOUT; anything it still gets is nak'd
        if self._active:
            log.info("draining: waiting for %d task(s)", len(self._active))
            timeout = max(0.0, deadline - time.monotonic())
            _, pending = await asyncio.wait(set(self._active), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._probe is not None:
            self._background.append(self._probe)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.cancelled.stop()
        await self._nc.flush()  # acks and naks reach the server before we go

    # --- fetching ---------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        while not self._stopping:
            if len(self._active) >= self._concurrency:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            if not self._storage_ok.is_set():
                # Storage is down: pull nothing (the queue waits in JetStream, not in naks) until
                # the probe sees it back. drain() sets _slot_free, so this wakes for it too.
                self._slot_free.clear()
                await _first(self._storage_ok.wait(), self._slot_free.wait())
                continue
            # One message per request: nats-py's batch fetch waits for the whole batch (or the
            # expiry) once the first message is in, which would hold a ready task back. A burst
            # is still taken at once: each further fetch is one round trip while slots are free.
            try:
                msgs = await self._sub.fetch(1, timeout=FETCH_TIMEOUT)
            except nats.errors.TimeoutError:
                continue
            except Exception as exc:  # connection trouble: nats-py reconnects by itself
                if self._stopping:
                    break
                if self._consumer_missing:  # already reported; the check rebinds when it is back
                    log.debug("fetch failed while the consumer is missing: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
                log.warning("fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                if self._stopping:
                    await _quietly(msg.nak())
                    self.handed_back += 1
                elif not self._storage_ok.is_set():  # a pull made before storage went down
                    await _quietly(msg.nak(delay=self._settings.storage_probe_seconds))
                else:
                    self._spawn(msg)

    def _spawn(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle(msg))
        self._active.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._slot_free.set()

    # --- one message ------------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        started = time.monotonic()
        try:
            task = tasks_pb2.TaskMessage.FromString(msg.data)
        except Exception:
            log.error("dropping a task message that is not a TaskMessage")
            await _quietly(msg.ack())
            return
        log_ctx.job_id.set(task.job_id)
        log_ctx.task_id.set(task.task_id)
        seq = msg.metadata.sequence.stream
        repeat = self.attempts.repeat(task.task_id, seq)
        if repeat is not None:
            if repeat == _Attempts.SAME_MESSAGE:
                log.info("redelivery of a task running here; its running attempt settles it")
            else:
                log.info("a second copy of a task %s here; dropped", repeat)
                await _quietly(msg.ack())
            metrics.settled(task.task_type, metrics.DUPLICATE, 0.0)
            return
        self.attempts.begin(task.task_id, seq)
        token = otel_context.attach(tracing.extract(msg.headers))
        metrics.ACTIVE.inc()
        keepalive = asyncio.create_task(self._keep_alive(msg))
        outcome = metrics.ERROR
        try:
            outcome = await self._settle(msg, task)
        except asyncio.CancelledError:
            # Drain ran out of time: hand the task back at once to another replica.
            await _quietly(msg.nak())
            self.handed_back += 1
            outcome = metrics.HANDED_BACK
            raise
        finally:
            self.attempts.end(task.task_id, settled=outcome in (metrics.SUCCESS, metrics.FAILED,
                                                                metrics.CANCELLED))
            keepalive.cancel()
            metrics.ACTIVE.dec()
            otel_context.detach(token)
            elapsed = time.monotonic() - started
            log.info("task %s: %s after %.3fs (delivery %d)", task.task_type, outcome, elapsed,
                     msg.metadata.num_delivered)
            metrics.settled(task.task_type, outcome, elapsed)

    async def _settle(self, msg: Msg, task: tasks_pb2.TaskMessage) -> str:
        """Run the task and ack/nak its message; returns the outcome for metrics."""
        try:
            if task.job_id in self.cancelled:
                await msg.ack()
                return metrics.CANCELLED
            deadline = self._settings.task_deadline_seconds
            if time.time() - _dispatched_at(task, msg) > deadline:
                return await self._fail(msg, task, deadline_error(deadline))
            await self._pipeline.run(task)
            await msg.ack()
            return metrics.SUCCESS
        except JobCancelled:
            log.info("job cancelled while its task ran; results dropped")
            await _quietly(msg.ack())
            return metrics.CANCELLED
        except TaskFailed as exc:
            log.info("task failed: %s", exc)
            return await self._fail(msg, task, str(exc))
        except Exception as exc:
            kind = _transient_kind(exc)
            if kind is None:
                log.exception("unexpected error while processing %s", task.input_file)
                return await self._fail(msg, task, f"internal error while processing {task.input_file}")
            return await self._retry_later(msg, task, kind, exc)

    async def _retry_later(self, msg: Msg, task: tasks_pb2.TaskMessage, kind: str,
                           exc: BaseException) -> str:
        """A transient failure: hand the task back with a capped delay, or fail it when it is past
        its deadline."""
        attempt = msg.metadata.num_delivered
        age = time.time() - _dispatched_at(task, msg)
        deadline = self._settings.task_deadline_seconds
        if age > deadline:
            log.warning("past its deadline after %s unavailable: %s", kind, _describe(exc))
            return await self._fail(
                # The user sees the kind and code; the details (addresses) stay in the service log.
                msg, task, deadline_error(deadline, f"{kind} unavailable ({_code(exc)})"))
        if kind == "storage error":
            if await self._storage.serving(timeout=self._settings.storage_probe_seconds):
                errors = self.attempts.storage_error(task.task_id)
                if errors >= STORAGE_ERROR_ATTEMPTS:
                    return await self._fail(msg, task, f"storage error after {errors} attempts "
                                                       f"({_code(exc)}); please submit the file again")
            else:  # it cut the stream on its way down: an outage after all
                kind = "storage"
        if kind == "storage":
            self._storage_down()
        delay = retry_delay(attempt, self._settings.retry_backoff_seconds,
                            self._settings.retry_backoff_max_seconds)
        log.warning("attempt %d failed (%s unavailable: %s); retrying in %.1fs",
                    attempt, kind, _describe(exc), delay)
        await _quietly(msg.nak(delay=delay))
        return metrics.RETRIED

    def _storage_down(self) -> None:
        if not self._storage_ok.is_set():
            return
        self._storage_ok.clear()
        log.warning("storage unreachable: no new task is pulled until it answers again")
        self._probe = asyncio.create_task(self._probe_storage(), name="storage-probe")

    async def _probe_storage(self) -> None:
        interval = max(0.1, self._settings.storage_probe_seconds)
        while not await self._storage.serving(timeout=interval):
            await asyncio.sleep(interval)
        log.info("storage answers again: pulling tasks")
        self._storage_ok.set()

    async def _fail(self, msg: Msg, task: tasks_pb2.TaskMessage, error: str) -> str:
        try:
            await self._events.publish(task, common_pb2.STATUS_FAILED, 100, error, error=error)
        except Exception as exc:  # cannot report it: leave the message to be redelivered
            log.error("could not publish the failure (%s); the task will be redelivered", exc)
            return metrics.ERROR
        await _quietly(msg.ack())
        return metrics.FAILED

    async def _keep_alive(self, msg: Msg) -> None:
        interval = max(0.1, self.ack_wait / 3)
        while True:
            await asyncio.sleep(interval)
            await _quietly(msg.in_progress())


async def _quietly(ack: object) -> None:
    try:
        await ack  # type: ignore[misc]
    except Exception as exc:  # the server redelivers after ack_wait anyway
        log.warning("could not acknowledge a task message: %s", exc)


async def _first(*waits: object) -> None:
    """Wait until the first of these awaitables is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


class _Attempts:
    """Which task ids run here (and on which stream message), and which ended here recently.

    At most one visible result per task rests on three rules: the jobs service applies only a
    task's first terminal event; outputs are written once (pipeline.py: storage Put if_absent, so a
    later run of a task keeps and reports the objects an earlier run stored); and, here, a replica
    runs a task id at most once at a time. A frozen replica (SIGSTOP past ack_wait) gets its own
    message redelivered while its first attempt still holds it: that redelivery (the same stream
    sequence) is left to the running attempt, a second copy (a reconciler's republish) is acked
    while one runs, and a late redelivery of the message this replica finished is acked unrun. A
    new message for a finished task (the reconciler republishes only when the task's events were
    lost) runs again, like a copy that reaches another replica: it can change neither the result
    nor its objects."""

    SAME_MESSAGE, RUNNING, FINISHED = "same message", "running here", "finished here"

    def __init__(self, remember: int = RECENTLY_SETTLED) -> None:
        self._running: dict[str, int] = {}
        self._finished: OrderedDict[str, int] = OrderedDict()  # task id: its stream sequence
        self._remember = remember
        self._storage_errors: OrderedDict[str, int] = OrderedDict()

    def repeat(self, task_id: str, seq: int) -> str | None:
        """Why this delivery must not run (None: run it)."""
        if task_id in self._running:
            return self.SAME_MESSAGE if self._running[task_id] == seq else self.RUNNING
        if self._finished.get(task_id) == seq:
            return self.FINISHED
        return None

    def begin(self, task_id: str, seq: int) -> None:
        self._running[task_id] = seq

    def end(self, task_id: str, *, settled: bool) -> None:
        seq = self._running.pop(task_id, None)
        if settled and seq is not None:
            self._finished[task_id] = seq
            self._finished.move_to_end(task_id)
            while len(self._finished) > self._remember:
                self._finished.popitem(last=False)

    def running(self) -> int:
        return len(self._running)

    def storage_error(self, task_id: str) -> int:
        """Count one error of a storage that answered, for this task; returns the count so far."""
        count = self._storage_errors.pop(task_id, 0) + 1
        self._storage_errors[task_id] = count
        while len(self._storage_errors) > self._remember:
            self._storage_errors.popitem(last=False)
        return count


# --- retry policy ---------------------------------------------------------------------------------


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Delay before delivery `attempt` + 1: base, 2 x base, 4 x base ... at most `cap`."""
    return min(cap, base * 2 ** min(max(attempt, 1) - 1, 30))


def _dispatched_at(task: tasks_pb2.TaskMessage, msg: Msg) -> float:
    """When the task was first published; a message from an older publisher: when it was stored."""
    if task.dispatched_at > 0:
        return task.dispatched_at
    return msg.metadata.timestamp.timestamp()



def _transient_kind(exc: BaseException) -> str | None:
    """What was unavailable, when a later attempt may succeed; None for a bug."""
    if isinstance(exc, grpc.aio.AioRpcError):  # StorageStalled too (DEADLINE_EXCEEDED)
        if exc.code() in _OUTAGE_GRPC:
            return "storage"
        return "storage error" if exc.code() in _ERROR_GRPC else None
    if isinstance(exc, _TRANSIENT_NATS):
        return "messaging"
    if isinstance(exc, BrokenProcessPool):
        return "worker pool"
    return None


def _code(exc: BaseException) -> str:
    return exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, BrokenProcessPool):
        return "a worker process died"
    return str(exc) or type(exc).__name__
