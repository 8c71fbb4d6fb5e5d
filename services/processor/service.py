"""ProcessorService: the operations catalogue, params validation and file inspection."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import grpc

from services.common.gen.radiology.v1 import processor_pb2, processor_pb2_grpc
from services.common.protobuf import NOT_JSON, from_struct_plain, to_struct
from services.common.storage_client import StorageClient
from services.processor import operations
from services.processor.imaging import ImagingError
from services.processor.pool import ProcessPool

log = logging.getLogger(__name__)

SERVICE_NAME = processor_pb2.DESCRIPTOR.services_by_name["ProcessorService"].full_name


class ProcessorService(processor_pb2_grpc.ProcessorServiceServicer):
    def __init__(self, *, storage: StorageClient, pool: ProcessPool, tmp_root: Path) -> None:
        self._storage = storage
        self._pool = pool
        self._tmp_root = tmp_root
        # The catalogue is static: build the response once.
        self._catalogue = processor_pb2.ListOperationsResponse(operations=[
            processor_pb2.Operation(
                name=op["name"], title=op["title"], description=op["description"],
                accepts=op["accepts"], params_schema=to_struct(op["params_schema"]),
                outputs=op["outputs"],
            )
            for op in operations.catalogue()
        ])

    async def ListOperations(self, request, context):  # noqa: N802 (gRPC method name)
        return self._catalogue

    async def ValidateParams(self, request, context):  # noqa: N802
        try:
            params = operations.validate_params(request.task_type, from_struct_plain(request.params))
        except operations.ParamsError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ValueError:  # NaN or Infinity in the Struct
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, NOT_JSON)
        return processor_pb2.ValidateParamsResponse(params=to_struct(params))

    async def Inspect(self, request, context):  # noqa: N802
        self._tmp_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="inspect-", dir=self._tmp_root))
        try:
            name = Path(request.key).name or "input"
            try:
                path = await self._storage.download_input(request.key, tmp)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.NOT_FOUND:
                    await context.abort(code, f"no stored file {request.key}")
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    await context.abort(code, exc.details() or "invalid key")
                # UNAVAILABLE, or a stall (DEADLINE_EXCEEDED): worth a retry.
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"storage unavailable: {exc.details()}")
            try:
                fmt, metadata = await self._pool.inspect(str(path))
            except ImagingError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except BrokenProcessPool:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "a worker process died; try again")
            except Exception:
                log.exception("inspect of %s failed", request.key)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error while inspecting {name}")
            return processor_pb2.InspectResponse(format=fmt, metadata=to_struct(metadata))
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)
