"""How every service process runs: its asyncio loop (uvloop) and its garbage collector settings.

uvloop (libuv) schedules callbacks, timers and socket I/O for less CPU than asyncio's own loop;
grpc.aio, nats-py and uvicorn all run on it. The collector: a service imports a few hundred
thousand long-lived objects (gRPC, SQLAlchemy, pydantic, protobuf descriptors) that every full
collection would walk again; `settle` moves them out of the collector's sight once the service is
up, and young collections run less often (each request allocates many short-lived objects)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

import uvloop

# Allocations (minus deallocations) between two young collections; CPython's default is 700.
YOUNG_THRESHOLD = 10_000


def run(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run(main) on a uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def settle() -> None:
    """Call once the service has started: what exists now lives as long as the process."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
