"""A background pass repeated every few seconds (the outbox, the janitor)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs `step` every `interval` seconds (the first time at once when `at_start`) until stop(),
    which lets a step in progress finish. A failed step is logged with its traceback; the next one
    simply tries again (a database or storage outage ends by itself)."""

    def __init__(
        self, name: str, step: Callable[[], Awaitable[object]], interval: float, *, at_start: bool
    ) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.at_start = at_start
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"jobs-{self.name}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        wait = not self.at_start
        while True:
            if wait:
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.interval)
                except TimeoutError:
                    pass
            wait = True
            if self._stopping.is_set():
                return
            try:
                await self.step()
            except Exception:
                log.exception("%s pass failed; next one in %.1fs", self.name, self.interval)
