"""JetStream task consumer: pulls TaskMessages from the shared durable consumer and runs them.

Per task: input from storage -> RUNNING 10 "fetched" -> operation in the process pool (40 "decoded",
70 "processed" as they happen) -> outputs to storage -> SUCCESS 100 "stored" -> ack.
Deterministic failures are FAILED and acked; transient ones are nak'd with exponential backoff
until the last delivery, which is FAILED and acked. Everything is idempotent: output keys are
deterministic and event ids are "<task_id>:<progress>:<status>".
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections import OrderedDict
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import grpc
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from prometheus_client import Counter, Gauge, Histogram

from services.common import logging as log_ctx
from services.common import messaging, tracing
from services.common.config import Settings
from services.common.gen.radiology.v1 import common_pb2, tasks_pb2
from services.common.keys import choose_output_stems, object_key
from services.common.protobuf import from_struct_plain, to_struct
from services.common.storage_client import StorageClient
from services.processor.imaging import ImagingError
from services.processor.operations import ParamsError
from services.processor.pool import ProcessPool

log = logging.getLogger(__name__)

ACTIVE = Gauge("worker_active_tasks", "Tasks this processor is working on")
LATENCY = Histogram(
    "task_latency_seconds", "From fetching a task to its final ack", ["task_type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
PROCESSED = Counter("tasks_processed", "Tasks settled by this processor", ["task_type", "outcome"])
ERRORS = Counter("error_rate", "Tasks that ended FAILED", ["task_type"])
QUEUE_DEPTH = Gauge("queue_depth", "Tasks waiting in JetStream for a processor")

RUNNING, SUCCESS, FAILED = common_pb2.STATUS_RUNNING, common_pb2.STATUS_SUCCESS, common_pb2.STATUS_FAILED

# A lingering fetch returns as soon as one message arrives; this only bounds how long drain waits.
FETCH_TIMEOUT = 1.0
QUEUE_DEPTH_INTERVAL = 5.0
PUBLISH_TIMEOUT = 5.0
CANCELLED_MEMORY = 10_000
# Scratch folders with less than this in them are removed on the event loop (see _process).
SMALL_SCRATCH_BYTES = 4 * 1024 * 1024

_TRANSIENT_GRPC = {
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED,
}
_TRANSIENT_NATS = (
    nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError,
    nats.errors.OutboundBufferLimitError, nats.js.errors.ServiceUnavailableError,
)


class TaskFailed(Exception):
    """Deterministic failure with a message for users."""


class JobCancelled(Exception):
    """The task's job was cancelled while it ran; its results are dropped."""


async def subscribe(js: JetStreamContext, settings: Settings) -> JetStreamContext.PullSubscription:
    """Bind to (creating if needed) the durable consumer shared by every processor replica."""
    config = messaging.consumer_config(
        messaging.PROCESSOR_DURABLE, messaging.TASKS_SUBJECT,
        ack_wait=settings.ack_wait_seconds, max_deliver=settings.max_deliver,
    )
    # Create, or update an existing durable to this replica's ack_wait/max_deliver (binding alone
    # would silently keep the old values).
    await js.add_consumer(messaging.TASKS_STREAM, config)
    return await js.pull_subscribe_bind(
        durable=messaging.PROCESSOR_DURABLE, stream=messaging.TASKS_STREAM
    )


class Worker:
    def __init__(self, *, settings: Settings, nc: NATS, sub: JetStreamContext.PullSubscription,
                 storage: StorageClient, pool: ProcessPool, drain_grace: float | None = None,
                 queue_depth_interval: float = QUEUE_DEPTH_INTERVAL) -> None:
        self._settings = settings
        self._nc = nc
        self._js = nc.jetstream()
        self._sub = sub
        self._storage = storage
        self._pool = pool
        self._concurrency = max(1, settings.task_concurrency)
        # Leave run_server's own drain deadline room for the naks that follow.
        self._drain_grace = (drain_grace if drain_grace is not None
                             else max(0.0, settings.shutdown_grace_seconds - 2.0))
        self._tmp_root = process_tmp_dir(settings.data_dir)
        self._queue_depth_interval = queue_depth_interval
        self._active: set[asyncio.Task[None]] = set()
        self._slot_free = asyncio.Event()
        self._slot_free.set()
        self._stopping = False
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._background: list[asyncio.Task[None]] = []
        self._cancel_sub = None
        self._fetcher: asyncio.Task[None] | None = None
        # Messages nak'd back to the stream by drain (for logs and tests).
        self.handed_back = 0

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(_clear_stale_tmp, self._tmp_root)
        self._cancel_sub = await self._nc.subscribe(messaging.JOB_CANCELLED_SUBJECT, cb=self._on_cancel)
        self._fetcher = asyncio.create_task(self._fetch_loop(), name="task-fetcher")
        self._background.append(asyncio.create_task(self._refresh_queue_depth(), name="queue-depth"))

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
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._cancel_sub is not None:
            await self._cancel_sub.unsubscribe()
        await self._nc.flush()  # acks and naks reach the server before we go

    # --- fetching ---------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        while not self._stopping:
            if len(self._active) >= self._concurrency:
                self._slot_free.clear()
                await self._slot_free.wait()
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
                log.warning("fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                if self._stopping:
                    await self._quietly(msg.nak())
                    self.handed_back += 1
                else:
                    self._spawn(msg)

    def _spawn(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle(msg))
        self._active.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._slot_free.set()

    # --- one task ---------------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        started = time.monotonic()
        try:
            task = tasks_pb2.TaskMessage.FromString(msg.data)
        except Exception:
            log.error("dropping a task message that is not a TaskMessage")
            await self._quietly(msg.ack())
            return
        log_ctx.job_id.set(task.job_id)
        log_ctx.task_id.set(task.task_id)
        token = otel_context.attach(tracing.extract(msg.headers))
        ACTIVE.inc()
        keepalive = asyncio.create_task(self._keep_alive(msg))
        outcome = "error"
        try:
            outcome = await self._settle(msg, task)
        except asyncio.CancelledError:
            # Drain ran out of time: hand the task back at once to another replica.
            await self._quietly(msg.nak())
            self.handed_back += 1
            outcome = "handed_back"
            raise
        finally:
            keepalive.cancel()
            ACTIVE.dec()
            otel_context.detach(token)
            elapsed = time.monotonic() - started
            log.info("task %s: %s after %.3fs (delivery %d)", task.task_type, outcome, elapsed,
                     msg.metadata.num_delivered)
            PROCESSED.labels(task.task_type, outcome).inc()
            if outcome == "failed":
                ERRORS.labels(task.task_type).inc()
            if outcome in ("success", "failed"):
                LATENCY.labels(task.task_type).observe(elapsed)

    async def _settle(self, msg: Msg, task: tasks_pb2.TaskMessage) -> str:
        """Run the task and ack/nak its message; returns the outcome for metrics."""
        attempt = msg.metadata.num_delivered
        try:
            if task.job_id in self._cancelled:
                await msg.ack()
                return "cancelled"
            await self._process(task)
            await msg.ack()
            return "success"
        except JobCancelled:
            log.info("job cancelled while its task ran; results dropped")
            await self._quietly(msg.ack())
            return "cancelled"
        except (ImagingError, ParamsError, TaskFailed) as exc:
            log.info("task failed: %s", exc)
            # A library's message may name our temp file; users know the file by its own name.
            error = re.sub(re.escape(str(self._tmp_root)) + r"[^\s'\"]*", task.input_file, str(exc))
            return await self._fail(msg, task, error)
        except Exception as exc:
            kind = _transient_kind(exc)
            if kind is None:
                log.exception("unexpected error while processing %s", task.input_file)
                return await self._fail(msg, task, f"internal error while processing {task.input_file}")
            if attempt < self._settings.max_deliver:
                delay = self._settings.retry_backoff_seconds * 2 ** (attempt - 1)
                log.warning("attempt %d failed (%s unavailable: %s); retrying in %.1fs",
                            attempt, kind, _describe(exc), delay)
                await self._quietly(msg.nak(delay=delay))
                return "retried"
            return await self._fail(
                msg, task, f"{kind} unavailable after {attempt} attempts: {_describe(exc)}")

    async def _fail(self, msg: Msg, task: tasks_pb2.TaskMessage, error: str) -> str:
        try:
            await self._event(task, FAILED, 100, error, error=error)
        except Exception as exc:  # cannot report it: leave the message to be redelivered
            log.error("could not publish the failure (%s); the task will be redelivered", exc)
            return "error"
        await self._quietly(msg.ack())
        return "failed"

    async def _process(self, task: tasks_pb2.TaskMessage) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="task-", dir=self._tmp_root))
        # Progress events go out at once but their JetStream acks are not waited for one by one
        # (a round trip each, holding the task back); SUCCESS waits for all of them first, so it
        # is still the last event, and a failed progress publish fails the attempt as before.
        progress_sent: list[asyncio.Task[None]] = []
        scratch_bytes: int | None = None  # known once every file in tmp is accounted for
        try:
            name = Path(task.input_file).name
            out_dir = tmp / "out"
            out_dir.mkdir()
            try:
                input_path = await self._storage.download_input(task.input_key, tmp)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    raise TaskFailed(f"input file {task.input_file} is no longer stored") from None
                raise
            progress_sent.append(self._event_soon(task, RUNNING, 10, "fetched"))
            self._check_cancelled(task)

            async def progress(pct: int, step: str) -> None:
                progress_sent.append(self._event_soon(task, RUNNING, pct, step))

            result = await self._pool.run_operation(
                task.task_type, from_struct_plain(task.params), str(input_path), str(out_dir),
                task.output_stem or choose_output_stems([name])[0], progress,
            )
            self._check_cancelled(task)
            outputs = [await self._store(task, out) for out in result["outputs"]]
            if not outputs:
                raise RuntimeError(f"operation {task.task_type} produced no output")
            scratch_bytes = input_path.stat().st_size + sum(o.size for o in outputs)
            outputs.sort(key=lambda o: o.role != "primary")  # the primary output first
            task_result = common_pb2.TaskResult(
                input_file=task.input_file, output_file=outputs[0].filename, task_type=task.task_type,
                outputs=outputs, metadata=to_struct(result.get("metadata")),
            )
            await asyncio.gather(*progress_sent)
            await self._event(task, SUCCESS, 100, "stored", result=task_result)
        finally:
            if progress_sent:  # settled before a FAILED event or a nak; errors already counted
                await asyncio.gather(*progress_sent, return_exceptions=True)
            if scratch_bytes is not None and scratch_bytes < SMALL_SCRATCH_BYTES:
                # A few small files: removing them here costs less CPU than a thread hop.
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)

    async def _store(self, task: tasks_pb2.TaskMessage, out: dict) -> common_pb2.Output:
        filename = out["filename"]
        # Deterministic key: a redelivered task overwrites its earlier outputs.
        try:
            key = object_key(task.user_id, task.job_id, filename)
        except ValueError as exc:
            raise RuntimeError(f"operation returned an unsafe output: {exc}") from None
        info = await self._storage.upload(key, Path(out["path"]), out["media_type"])
        return common_pb2.Output(
            filename=filename, key=key, media_type=out["media_type"], size=info.size,
            sha256=info.sha256, role=out.get("role") or "primary",
        )

    async def _event(self, task: tasks_pb2.TaskMessage, status: int, progress: int, message: str, *,
                     error: str = "", result: common_pb2.TaskResult | None = None) -> None:
        await self._publish_event(*self._event_message(task, status, progress, message, error, result))

    def _event_soon(self, task: tasks_pb2.TaskMessage, status: int, progress: int,
                    message: str) -> asyncio.Task[None]:
        """Publish an event without waiting for its ack (await the returned task for that). The
        message is built now (its time is now); tasks start in creation order, so the events
        leave in the order they happened."""
        return asyncio.create_task(
            self._publish_event(*self._event_message(task, status, progress, message, "", None)))

    def _event_message(self, task: tasks_pb2.TaskMessage, status: int, progress: int, message: str,
                       error: str, result: common_pb2.TaskResult | None) -> tuple[str, bytes, dict[str, str]]:
        event = tasks_pb2.TaskEvent(
            task_id=task.task_id, job_id=task.job_id, status=status, progress=progress,
            message=message, error=error, result=result, emitted_at=time.time(),
        )
        status_name = common_pb2.Status.Name(status).removeprefix("STATUS_")
        headers = tracing.inject({"Nats-Msg-Id": f"{task.task_id}:{progress}:{status_name}"})
        return messaging.event_subject(task.task_id), event.SerializeToString(), dict(headers)

    async def _publish_event(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        await self._js.publish(subject, payload, headers=headers, timeout=PUBLISH_TIMEOUT)

    async def _keep_alive(self, msg: Msg) -> None:
        interval = max(0.1, self._settings.ack_wait_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            await self._quietly(msg.in_progress())

    # --- cancellations and housekeeping -------------------------------------------------------

    async def _on_cancel(self, msg: Msg) -> None:
        job_id = msg.data.decode("utf-8", "replace").strip()
        if job_id:
            self._cancelled[job_id] = None
            self._cancelled.move_to_end(job_id)
            while len(self._cancelled) > CANCELLED_MEMORY:
                self._cancelled.popitem(last=False)

    def _check_cancelled(self, task: tasks_pb2.TaskMessage) -> None:
        if task.job_id in self._cancelled:
            raise JobCancelled

    async def _refresh_queue_depth(self) -> None:
        while True:
            try:
                QUEUE_DEPTH.set((await self._sub.consumer_info()).num_pending)
            except Exception as exc:
                log.debug("queue depth unavailable: %s", exc)
            await asyncio.sleep(self._queue_depth_interval)

    @staticmethod
    async def _quietly(ack: object) -> None:
        try:
            await ack  # type: ignore[misc]
        except Exception as exc:  # the server redelivers after ack_wait anyway
            log.warning("could not acknowledge a task message: %s", exc)


_cleared: set[Path] = set()


def process_tmp_dir(data_dir: str) -> Path:
    """This process's scratch folder: "<data_dir>/tmp/<host>-<pid>"."""
    return Path(data_dir) / "tmp" / f"{socket.gethostname()}-{os.getpid()}"


def _clear_stale_tmp(own: Path) -> None:
    """Remove what killed processes on this host left behind (and our own folder, if a pid was
    reused), so that a crash does not leak temp files."""
    host = socket.gethostname()
    for folder in own.parent.glob(f"{host}-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        # Our own folder only once per process: a second Worker here must not wipe the first's.
        if (folder == own and own not in _cleared) or (pid.isdigit() and not _alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
    _cleared.add(own)
    own.mkdir(parents=True, exist_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _transient_kind(exc: BaseException) -> str | None:
    if isinstance(exc, grpc.aio.AioRpcError):  # StorageStalled too (DEADLINE_EXCEEDED)
        return "storage" if exc.code() in _TRANSIENT_GRPC else None
    if isinstance(exc, _TRANSIENT_NATS):
        return "messaging"
    if isinstance(exc, BrokenProcessPool):
        return "worker pool"
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, BrokenProcessPool):
        return "a worker process died"
    return str(exc) or type(exc).__name__
