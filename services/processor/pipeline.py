"""One task from input to result: fetch the input, run the operation, store the outputs.

Events: RUNNING 10 "fetched" -> (in the pool) 40 "decoded", 70 "processed" -> SUCCESS 100 "stored"
with the TaskResult and the task's log lines (the seconds of download and upload around the lines
the operation runner wrote: decoder, warnings, decode/operation/encode times). An attempt that
raises leaves its lines with TaskEvents for the FAILED event.

The steps reported from inside the pool are held for PROGRESS_HOLD_SECONDS and
dropped when a later step or the result overtakes them: a task of a few milliseconds reports
"fetched" and its result (each event costs a database transaction and a message to every watcher),
a longer one every step, late by at most the hold. Output keys are deterministic and written once
(storage's if_absent): a later run of a task (a redelivery, a retry after a failure whose outcome
was unknown, another replica that got the task while the first was frozen) keeps the objects an
earlier run stored and reports them as they are, so a result users see is never replaced.
Whether and when to retry is the consumer's business
(worker.py): this module raises TaskFailed for what no retry can fix and lets transient errors
through.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from services.common.gen.radiology.v1 import common_pb2, tasks_pb2
from services.common.keys import choose_output_stems, object_key
from services.common.protobuf import from_struct_plain, to_struct
from services.common.storage_client import StorageClient
from services.common.tasklogs import clean_logs
from services.processor.cancellation import CancelledJobs
from services.processor.events import TaskEvents
from services.processor.imaging import ImagingError
from services.processor.operations import OperationError
from services.processor.pool import ProcessPool

RUNNING, SUCCESS = common_pb2.STATUS_RUNNING, common_pb2.STATUS_SUCCESS

# Scratch folders with less than this in them are removed on the event loop (see run).
SMALL_SCRATCH_BYTES = 4 * 1024 * 1024
# How long a step reported from inside the operation waits for a later one before it is published.
PROGRESS_HOLD_SECONDS = 0.1


class TaskFailed(Exception):
    """A deterministic failure (the input, the params, a file gone): ``str(error)`` is written for
    users and is the task's error."""


class TaskPipeline:
    def __init__(self, *, storage: StorageClient, pool: ProcessPool, events: TaskEvents,
                 cancelled: CancelledJobs, tmp_root: Path) -> None:
        self._storage = storage
        self._pool = pool
        self._events = events
        self._cancelled = cancelled
        self._tmp_root = tmp_root

    async def run(self, task: tasks_pb2.TaskMessage) -> None:
        """Process the task up to its SUCCESS event. Raises TaskFailed, JobCancelled (a step after
        the cancel notice), or a transient error (storage, NATS, a dead pool process)."""
        log = _TaskLog()
        try:
            await self._run(task, log)
        except BaseException as exc:
            log.failed(exc)
            self._events.keep_logs(task.task_id, self._logs(task, log.lines))
            if isinstance(exc, ImagingError | OperationError):
                raise TaskFailed(self._user_words(task, str(exc))) from None
            raise

    def _user_words(self, task: tasks_pb2.TaskMessage, text: str) -> str:
        # A library's message may name our temp file; users know the file by its own name.
        return re.sub(re.escape(str(self._tmp_root)) + r"[^\s'\"]*", task.input_file, text)

    def _logs(self, task: tasks_pb2.TaskMessage, lines: list[str]) -> list[str]:
        return clean_logs(self._user_words(task, line) for line in lines)

    async def _run(self, task: tasks_pb2.TaskMessage, log: _TaskLog) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="task-", dir=self._tmp_root))
        # Progress events go out at once but their JetStream acks are not waited for one by one
        # (a round trip each, holding the task back); SUCCESS waits for all of them first, so it
        # is still the last event, and a failed progress publish fails the attempt.
        progress_sent: list[asyncio.Task[None]] = []
        scratch_bytes: int | None = None  # known once every file in tmp is accounted for
        try:
            out_dir = tmp / "out"
            out_dir.mkdir()
            log.start("download")
            input_path = await self._fetch_input(task, tmp)
            log.done(f"({_size(input_path.stat().st_size)})")
            progress_sent.append(self._events.publish_soon(task, RUNNING, 10, "fetched"))
            self._cancelled.check(task.job_id)

            held = _HeldStep(lambda pct, step: progress_sent.append(
                self._events.publish_soon(task, RUNNING, pct, step)))

            async def progress(pct: int, step: str) -> None:
                held.offer(pct, step)

            stem = task.output_stem or choose_output_stems([Path(task.input_file).name])[0]
            log.start("processing")
            try:
                result = await self._pool.run_operation(
                    task.task_type, from_struct_plain(task.params), str(input_path), str(out_dir), stem,
                    progress, {"job_id": task.job_id, "series_instance_uid": task.series_instance_uid},
                )
            finally:
                held.drop()  # overtaken by the result (or the failure)
            log.stage = None  # the runner's own lines time its steps
            log.lines.extend(result.get("log") or ())
            self._cancelled.check(task.job_id)
            log.start("upload")
            outputs = [await self._store(task, out) for out in result["outputs"]]
            if not outputs:
                raise RuntimeError(f"operation {task.task_type} produced no output")
            log.done(f"({len(outputs)} file(s), {_size(sum(o.size for o in outputs))})")
            scratch_bytes = input_path.stat().st_size + sum(o.size for o in outputs)
            outputs.sort(key=lambda o: o.role != "primary")  # the primary output first
            task_result = common_pb2.TaskResult(
                input_file=task.input_file, output_file=outputs[0].filename, task_type=task.task_type,
                outputs=outputs, metadata=to_struct(result.get("metadata")),
            )
            await asyncio.gather(*progress_sent)
            await self._events.publish(task, SUCCESS, 100, "stored", result=task_result,
                                       logs=self._logs(task, log.lines))
        finally:
            if progress_sent:  # settled before a FAILED event or a nak; errors already counted
                await asyncio.gather(*progress_sent, return_exceptions=True)
            if scratch_bytes is not None and scratch_bytes < SMALL_SCRATCH_BYTES:
                # A few small files: removing them here costs less CPU than a thread hop.
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)

    async def _fetch_input(self, task: tasks_pb2.TaskMessage, tmp: Path) -> Path:
        try:
            return await self._storage.download_input(task.input_key, tmp)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise TaskFailed(f"input file {task.input_file} is no longer stored") from None
            raise

    async def _store(self, task: tasks_pb2.TaskMessage, out: dict) -> common_pb2.Output:
        filename = out["filename"]
        try:
            key = object_key(task.user_id, task.job_id, filename)
        except ValueError as exc:
            raise RuntimeError(f"operation returned an unsafe output: {exc}") from None
        try:
            info = await self._storage.upload(key, Path(out["path"]), out["media_type"], if_absent=True)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            info = await self._storage.stat(key)  # an earlier run's: the one users may already see
        return common_pb2.Output(
            filename=filename, key=key, media_type=out["media_type"], size=info.size,
            sha256=info.sha256, role=out.get("role") or "primary",
        )


class _TaskLog:
    """A task's log lines as the pipeline goes: each stage's seconds, and where it stopped."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.stage: str | None = None
        self._started = 0.0

    def start(self, stage: str) -> None:
        self.stage, self._started = stage, time.perf_counter()

    def done(self, detail: str = "") -> None:
        self.lines.append(f"{self.stage}: {time.perf_counter() - self._started:.3f} s {detail}".rstrip())
        self.stage = None

    def failed(self, exc: BaseException) -> None:
        # Lines the operation runner wrote in the worker process before it raised.
        self.lines.extend(line for line in getattr(exc, "task_log", ()) if isinstance(line, str))
        if self.stage is not None:
            self.lines.append(f"{self.stage} stopped after {time.perf_counter() - self._started:.3f} s")


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024**2 else f"{n / 1024**2:.1f} MiB"


class _HeldStep:
    """The latest progress step, published by `send` once it has stood PROGRESS_HOLD_SECONDS
    without a later one replacing it. Steps only grow, so what is published stays monotonic."""

    def __init__(self, send: Callable[[int, str], None]) -> None:
        self._send = send
        self._timer: asyncio.TimerHandle | None = None

    def offer(self, pct: int, step: str) -> None:
        self.drop()
        self._timer = asyncio.get_running_loop().call_later(PROGRESS_HOLD_SECONDS, self._fire, pct, step)

    def _fire(self, pct: int, step: str) -> None:
        self._timer = None
        self._send(pct, step)

    def drop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
