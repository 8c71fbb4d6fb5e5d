"""The operations catalogue from ProcessorService, cached for a few seconds (it rarely changes and
every upload consults it). While no processor answers, GET /operations serves the last catalogue
seen, and new jobs are accepted (and queued) only with params that were validated before."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from typing import Any

from services.common.accepts import format_refusal
from services.common.gen.radiology.v1 import processor_pb2
from services.common.protobuf import from_struct_plain
from services.gateway.clients import ProcessorClient
from services.gateway.errors import INPUT_NOT_ACCEPTED, SERVICE_UNAVAILABLE, UNKNOWN_TASK_TYPE, ApiError

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
    def __init__(self, processor: ProcessorClient, ttl: float | None = None) -> None:
        self._processor = processor
        self._ttl = CACHE_SECONDS if ttl is None else ttl
        self._ops: list[dict[str, Any]] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()
        self._validated: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    async def operations(self) -> list[dict[str, Any]]:
        async with self._lock:
            if self._ops is None or time.monotonic() - self._at > self._ttl:
                try:
                    ops = await self._processor.list_operations()
                except ApiError as exc:
                    if self._ops is None or exc.error is not SERVICE_UNAVAILABLE:
                        raise
                    return self._ops  # stale but known: processors are restarting
                self._ops = [operation_json(op) for op in ops]
                self._at = time.monotonic()
            return self._ops

    async def validate(self, task_type: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """The params checked by ProcessorService.ValidateParams (ApiError invalid_params when refused),
        remembered as long as the catalogue: the same operation and params validate the same way,
        and most jobs repeat them. While no processor answers, a pair validated earlier (at any age)
        is still accepted."""
        key = (task_type, json.dumps(params or {}, sort_keys=True))
        hit = self._validated.get(key)
        if hit is not None and time.monotonic() - hit[0] <= self._ttl:
            return copy.deepcopy(hit[1])
        try:
            validated = await self._processor.validate_params(task_type, params)
        except ApiError as exc:
            if hit is None or exc.error is not SERVICE_UNAVAILABLE:
                raise
            return copy.deepcopy(hit[1])  # checked before; the job waits in the queue for a processor
        if len(self._validated) >= MAX_REMEMBERED:
            self._validated.clear()
        self._validated[key] = (time.monotonic(), validated)
        return copy.deepcopy(validated)

    async def check_inputs(self, task_type: str, files: list[tuple[str, str]]) -> None:
        """ApiError input_not_accepted unless the operation accepts every (name, sniffed format)."""
        op = next(op for op in await self.operations() if op["name"] == task_type)
        for name, fmt in files:
            refusal = format_refusal(task_type, fmt, op["accepts"])
            if refusal:
                raise ApiError(INPUT_NOT_ACCEPTED, f"'{name}': {refusal}.")

    async def require(self, task_type: str) -> None:
        """ApiError unknown_task_type unless the catalogue has an operation of that name."""
        if not any(op["name"] == task_type for op in await self.operations()):
            raise ApiError(UNKNOWN_TASK_TYPE, f"Unknown task_type '{task_type[:64]}'; see GET /operations.")
