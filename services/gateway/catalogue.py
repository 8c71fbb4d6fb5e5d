"""The operations catalogue from ProcessorService, cached for a few seconds (it rarely changes and
every upload consults it). The last catalogue seen is kept, so that jobs are still accepted and
queued while every processor is restarting (their tasks wait in JetStream)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import jsonschema

from services.common.gen.radiology.v1 import processor_pb2
from services.common.protobuf import from_struct
from services.gateway.clients import BackendError, Backends

CACHE_SECONDS = 5.0
UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def validate_offline(op: dict[str, Any], params: dict[str, Any] | None) -> dict[str, Any]:
    """Check params against a known operation's JSON Schema and fill top-level defaults; used only
    while no processor answers (the processor checks them again before running)."""
    schema = op["params_schema"]
    params = dict(params or {})
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(params))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        raise ValueError(f"params.{where}: {error.message}" if where else f"params: {error.message}")
    for key, prop in schema.get("properties", {}).items():
        if "default" in prop and key not in params:
            params[key] = prop["default"]
    return params


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

    def last_known(self, name: str) -> dict[str, Any] | None:
        """The operation from the last catalogue seen, without asking the processor."""
        return next((op for op in self._ops or [] if op["name"] == name), None)

    async def has(self, name: str) -> bool:
        return any(op["name"] == name for op in await self.operations())
