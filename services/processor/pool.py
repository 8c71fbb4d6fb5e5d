"""The process pool that runs the CPU work (operations, inspect) off the event loop.

Worker processes are started with "forkserver" (never "fork": the parent has gRPC and asyncio
threads). Progress reported inside a worker process travels back over one multiprocessing queue,
handed to the pool at start by the initializer; a reader thread passes each item to the event loop.
This module imports neither gRPC nor NATS, so worker processes stay light.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from services.processor.pids import alive

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, str], Awaitable[None]]

# Seconds to wait, after an operation returned, for its last progress items to arrive.
_FLUSH_TIMEOUT = 2.0
_DONE = "__done__"

# --- inside a worker process --------------------------------------------------------------------

_progress_queue: Any = None


def _init_worker(queue: Any, service_pid: int, memory_budget: int) -> None:
    global _progress_queue
    _progress_queue = queue
    threading.Thread(target=_exit_with_service, args=(service_pid,), daemon=True).start()
    # Import the heavy modules once per process, not on the first task.
    from services.processor import imaging, operations  # noqa: F401
    from services.processor.imaging import limits

    limits.set_memory_budget(memory_budget)


def _exit_with_service(service_pid: int) -> None:
    """A worker blocks on its task queue for ever once the service is SIGKILLed or OOM-killed, so
    it watches the service process and leaves with it (no orphans holding memory)."""
    while alive(service_pid):
        time.sleep(1.0)
    os._exit(1)


def _warm() -> int:
    return 0


def _run_operation(run_id: str, task_type: str, params: dict, input_path: str, out_dir: str,
                   output_stem: str, context: dict[str, str]) -> dict:
    from services.processor import operations

    def progress(pct: int, step: str) -> None:
        _progress_queue.put((run_id, int(pct), str(step)))

    try:
        return operations.run(
            task_type, params, input_path, out_dir, output_stem, progress=progress, **context
        )
    finally:
        # Tells the parent that every progress item of this run is already in the queue.
        _progress_queue.put((run_id, -1, _DONE))


def _inspect(path: str) -> tuple[str, dict]:
    from services.processor import imaging

    return imaging.inspect(Path(path))


# --- in the service process ---------------------------------------------------------------------


class ProcessPool:
    """A ProcessPoolExecutor that forwards progress and replaces itself after a worker crash."""

    def __init__(self, workers: int, start_method: str = "forkserver", memory_budget: int = 0) -> None:
        """`memory_budget`: bytes a task may use in a worker process (imaging/limits.py); 0: none."""
        self._workers = max(1, workers)
        self._memory_budget = memory_budget
        self._ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # The fork server imports these once; each worker forked from it starts warm.
            self._ctx.set_forkserver_preload(["services.processor.operations"])
        self._queue = self._ctx.Queue()
        self._listeners: dict[str, asyncio.Queue[tuple[int, str]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: threading.Thread | None = None
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=self._ctx,
            initializer=_init_worker,
            initargs=(self._queue, os.getpid(), self._memory_budget),
        )

    async def start(self) -> None:
        """Start the progress reader and every worker process (so the first task is not slow)."""
        self._loop = asyncio.get_running_loop()
        self._reader = threading.Thread(target=self._read_progress, name="progress-reader", daemon=True)
        self._reader.start()
        await self._warm()

    async def _warm(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, _warm) for _ in range(self._workers)))

    def _read_progress(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop = self._loop
            if loop is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(self._dispatch, item)
                except RuntimeError:  # loop closed meanwhile
                    return

    def _dispatch(self, item: tuple[str, int, str]) -> None:
        run_id, pct, step = item
        listener = self._listeners.get(run_id)
        if listener is not None:
            listener.put_nowait((pct, step))

    async def run_operation(self, task_type: str, params: dict, input_path: str, out_dir: str,
                            output_stem: str, on_progress: ProgressCallback,
                            context: dict[str, str] | None = None) -> dict:
        """Run operations.run in a worker process; `on_progress` is awaited, in order, for each
        step it reports, and always before this returns; `context` holds run's keyword arguments
        (job_id, series_instance_uid). Raises what the operation raised, or BrokenProcessPool when
        the worker process died (the pool is then already replaced)."""
        run_id = uuid.uuid4().hex
        listener: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self._listeners[run_id] = listener
        pump = asyncio.create_task(self._pump(listener, on_progress))
        try:
            try:
                result = await self._submit(_run_operation, run_id, task_type, params, input_path,
                                            out_dir, output_stem, dict(context or {}))
            except BrokenProcessPool:
                raise
            except Exception:
                await self._finish(pump)  # progress reported before the failure still goes out
                raise
            await self._finish(pump)
            return result
        finally:
            pump.cancel()  # no-op once it finished
            self._listeners.pop(run_id, None)

    async def _finish(self, pump: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait_for(pump, _FLUSH_TIMEOUT)
        except TimeoutError:
            log.warning("progress of a finished operation did not arrive in time")

    @staticmethod
    async def _pump(listener: asyncio.Queue[tuple[int, str]], on_progress: ProgressCallback) -> None:
        while True:
            pct, step = await listener.get()
            if step == _DONE:
                return
            await on_progress(pct, step)

    async def inspect(self, path: str) -> tuple[str, dict]:
        return await self._submit(_inspect, path)

    async def _submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        executor = self._executor
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except BrokenProcessPool:
            self._replace(executor)
            raise

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        # Several tasks see the same crash; only the first one replaces the pool.
        if self._executor is broken:
            log.error("a worker process died; starting a new process pool")
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()

    def shutdown(self, kill: bool = False) -> None:
        """Stop the worker processes (blocking). `kill` stops running work too: used when that
        work was handed back to another replica and nobody waits for it."""
        executor = self._executor
        if kill:
            for proc in list((getattr(executor, "_processes", None) or {}).values()):
                proc.terminate()
        executor.shutdown(wait=True, cancel_futures=True)
        self._queue.put(None)
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._queue.close()
