"""The operations catalogue from ProcessorService, cached for a few seconds (it rarely changes and
every upload consults it). While no processor answers, GET /operations serves the last catalogue
seen, and new jobs are accepted (and queued) only with params that were validated before."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from typing import Any

from services.common.gen.radiology.v1 import processor_pb2
from services.common.protobuf import from_struct, from_struct_plain, to_struct
from services.gateway.clients import UNREACHABLE, BackendError, Backends

CACHE_SECONDS = 5.0
MAX_REMEMBERED = 256  # validated (operation, params) pairs


def operation_json(op: processor_pb2.Operation) -> dict[str, Any]:
    return {
        "name": op.name,
        "title": op.title,
        "description": op.description,
        "accepts": list(op.accepts),
        # Struct numbers are doubles: "default": 512, not 512.0 (and "maxItems": 3).
        "params_schema": from_struct_plain(op.params_schema),
        "outputs": op.outputs,
    }


class Catalogue:
    def __init__(self, backends: Backends, ttl: float | None = None) -> None:
        self._backends = backends
        self._ttl = CACHE_SECONDS if ttl is None else ttl
        self._ops: list[dict[str, Any]] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()
        self._validated: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

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

    async def validate(self, task_type: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """ProcessorService.ValidateParams (raises BackendError), remembered as long as the catalogue:
        the same operation and params validate the same way, and most jobs repeat them. While no
        processor answers, a pair validated earlier (at any age) is still accepted."""
        key = (task_type, json.dumps(params or {}, sort_keys=True))
        hit = self._validated.get(key)
        if hit is not None and time.monotonic() - hit[0] <= self._ttl:
            return copy.deepcopy(hit[1])
        try:
            resp = await self._backends.call(
                "processor",
                "ValidateParams",
                processor_pb2.ValidateParamsRequest(task_type=task_type, params=to_struct(params)),
            )
        except BackendError as exc:
            if hit is None or exc.code not in UNREACHABLE:
                raise
            return copy.deepcopy(hit[1])  # checked before; the job waits in the queue for a processor
        validated = from_struct(resp.params)
        if len(self._validated) >= MAX_REMEMBERED:
            self._validated.clear()
        self._validated[key] = (time.monotonic(), validated)
        return copy.deepcopy(validated)

    async def has(self, name: str) -> bool:
        return any(op["name"] == name for op in await self.operations())
