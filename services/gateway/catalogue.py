"""The operations catalogue from ProcessorService, cached for a few seconds (it rarely changes and
every upload consults it). While no processor answers, GET /operations serves the last catalogue
seen; new jobs get 503, since their params cannot be checked."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from services.common.gen.radiology.v1 import processor_pb2
from services.common.protobuf import from_struct
from services.gateway.clients import UNREACHABLE, BackendError, Backends

CACHE_SECONDS = 5.0


def operation_json(op: processor_pb2.Operation) -> dict[str, Any]:
    return {
        "name": op.name,
        "title": op.title,
        "description": op.description,
        "accepts": list(op.accepts),
        "params_schema": from_struct(op.params_schema),
        "outputs": op.outputs,
    }


class Catalogue:
    def __init__(self, backends: Backends, ttl: float = CACHE_SECONDS) -> None:
        self._backends = backends
        self._ttl = ttl
        self._ops: list[dict[str, Any]] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def operations(self) -> list[dict[str, Any]]:
        async with self._lock:
            if self._ops is None or time.monotonic() - self._at > self._ttl:
                try:
                    resp = await self._backends.call(
                        "processor", "ListOperations", processor_pb2.ListOperationsRequest()
                    )
                except BackendError as exc:
                    if self._ops is None or exc.code not in UNREACHABLE:
                        raise
                    return self._ops  # stale but known: processors are restarting
                self._ops = [operation_json(op) for op in resp.operations]
                self._at = time.monotonic()
            return self._ops


    async def has(self, name: str) -> bool:
        return any(op["name"] == name for op in await self.operations())
