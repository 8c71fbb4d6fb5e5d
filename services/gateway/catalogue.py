"""The operations catalogue from ProcessorService, cached for a few seconds (it rarely changes and
every upload consults it). While no processor answers, GET /operations serves the last catalogue
seen, and new jobs are accepted (and queued) only with params that were validated before; other
params get 503 at once, never a wait longer than the short deadline of one call."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from services.common import sniff
from services.common.accepts import KINDS, format_refusal, kind_of_inspection, kind_refusal
from services.common.gen.radiology.v1 import jobs_pb2, processor_pb2
from services.common.protobuf import from_struct_plain
from services.gateway.clients import ProcessorClient
from services.gateway.errors import INPUT_NOT_ACCEPTED, SERVICE_UNAVAILABLE, UNKNOWN_TASK_TYPE, ApiError

log = logging.getLogger(__name__)

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


# After the processor failed to answer, it is not asked again for this long: submissions meanwhile
# take the known-good path at once instead of each waiting out a deadline.
DOWN_SECONDS = 2.0


class Catalogue:
    """No lock serialises requests: concurrent refreshes of the catalogue share one call, and each
    call has a short deadline (RADIOLOGY_VALIDATE_TIMEOUT_SECONDS)."""

    def __init__(
        self, processor: ProcessorClient, ttl: float | None = None, timeout: float | None = None,
        down_seconds: float = DOWN_SECONDS,
    ) -> None:
        self._processor = processor
        self._ttl = CACHE_SECONDS if ttl is None else ttl
        self._timeout = timeout
        self._down_seconds = down_seconds
        self._ops: list[dict[str, Any]] | None = None
        self._at = 0.0
        self._refresh: asyncio.Task[list[dict[str, Any]]] | None = None
        self._down_until = 0.0
        self._validated: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def _processor_down(self) -> bool:
        return time.monotonic() < self._down_until

    def _note(self, exc: ApiError) -> None:
        if exc.error is SERVICE_UNAVAILABLE:
            self._down_until = time.monotonic() + self._down_seconds

    async def _fetch(self) -> list[dict[str, Any]]:
        ops = [operation_json(op) for op in await self._processor.list_operations(self._timeout)]
        self._ops, self._at = ops, time.monotonic()
        return ops

    async def operations(self) -> list[dict[str, Any]]:
        if self._ops is not None and (time.monotonic() - self._at <= self._ttl or self._processor_down()):
            return self._ops  # fresh, or stale but known while processors are away
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._fetch())
            # Its error is read here too, in case every waiter went away before it ended.
            self._refresh.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            # Shielded: one caller going away does not cancel the call the others wait on.
            return await asyncio.shield(self._refresh)
        except ApiError as exc:
            self._note(exc)
            if self._ops is None or exc.error is not SERVICE_UNAVAILABLE:
                raise
            return self._ops  # stale but known: processors are restarting

    async def validate(self, task_type: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """The params checked by ProcessorService.ValidateParams (ApiError invalid_params when refused),
        remembered as long as the catalogue: the same operation and params validate the same way,
        and most jobs repeat them. While no processor answers, a pair validated earlier (at any age)
        is still accepted, and any other is 503 at once."""
        key = (task_type, json.dumps(params or {}, sort_keys=True))
        hit = self._validated.get(key)
        if hit is not None and (time.monotonic() - hit[0] <= self._ttl or self._processor_down()):
            return copy.deepcopy(hit[1])
        if self._processor_down():
            raise ApiError(
                SERVICE_UNAVAILABLE,
                "No processor answers right now and these params were not validated before; "
                "retry shortly (params used recently are accepted meanwhile).",
            )
        try:
            validated = await self._processor.validate_params(task_type, params, self._timeout)
        except ApiError as exc:
            self._note(exc)
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

    async def check_kinds(
        self, task_type: str, inputs: Iterable[jobs_pb2.JobInput]
    ) -> dict[str, dict[str, Any]]:
        """ApiError input_not_accepted when a DICOM file or a ZIP of DICOM files holds a kind of
        image (2D image, 3D volume) the operation does not take, as ProcessorService.Inspect reads
        it from the headers (a single-frame CT for mip, say). Returns what Inspect said of each file
        it was asked about, by key. Nobody is asked when the operation takes both kinds (PNG and
        JPEG are 2D and NIfTI 3D by their format, checked before); a file Inspect cannot read, or no
        processor answering, leaves the question to the task."""
        op = next(op for op in await self.operations() if op["name"] == task_type)
        if all(kind in op["accepts"] for kind in KINDS):
            return {}
        inspected: dict[str, dict[str, Any]] = {}
        for job_input in inputs:
            if job_input.format not in (sniff.DICOM, sniff.ZIP):
                continue
            try:
                _, metadata = await self._processor.inspect(job_input.key)
            except ApiError as exc:
                log.warning("kind of %s not known (%s): the task checks it", job_input.filename, exc.detail)
                continue
            inspected[job_input.key] = metadata
            if int(metadata.get("series_count") or 1) > 1:
                continue  # Inspect's kind is its largest series': each series' task checks its own
            kind = kind_of_inspection(metadata.get("kind"))
            refusal = kind_refusal(task_type, kind, op["accepts"]) if kind else None
            if refusal:
                raise ApiError(INPUT_NOT_ACCEPTED, f"'{job_input.filename}': {refusal}.")
        return inspected

    async def require(self, task_type: str) -> None:
        """ApiError unknown_task_type unless the catalogue has an operation of that name."""
        if not any(op["name"] == task_type for op in await self.operations()):
            raise ApiError(UNKNOWN_TASK_TYPE, f"Unknown task_type '{task_type[:64]}'; see GET /operations.")
