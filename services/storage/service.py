"""StorageServicer: the radiology.v1.StorageService gRPC API over a storage Backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from prometheus_client import Counter

from services.common.gen.radiology.v1 import storage_pb2, storage_pb2_grpc
from services.storage.backends import (
    AlreadyExists,
    Backend,
    BackendUnavailable,
    InvalidArgument,
    NotFound,
    ObjectInfo,
    OutOfRange,
    StorageError,
    TooLarge,
)

log = logging.getLogger(__name__)

MAX_LIST_PAGE = 1000

SERVICE_NAME = storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name

BYTES_IN = Counter("storage_bytes_in", "Bytes received by StorageService.Put")
BYTES_OUT = Counter("storage_bytes_out", "Bytes sent by StorageService.Get")
ERRORS = Counter("storage_errors", "StorageService calls that failed, by status code", ["code"])

_CODES: list[tuple[type[StorageError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),  # InvalidKey too
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (BackendUnavailable, grpc.StatusCode.UNAVAILABLE),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
]


def status_for(exc: StorageError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def to_proto(info: ObjectInfo) -> storage_pb2.ObjectInfo:
    return storage_pb2.ObjectInfo(key=info.key, size=info.size, sha256=info.sha256,
                                  content_type=info.content_type, etag=info.etag,
                                  modified_at=info.modified_at)


async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    """End the call with a status and a message for humans; never a stack trace."""
    if isinstance(exc, StorageError):
        code, message = status_for(exc), str(exc)
    else:
        log.exception("storage call failed")
        code, message = grpc.StatusCode.INTERNAL, "internal storage error"
    ERRORS.labels(code.name).inc()
    await context.abort(code, message)


async def _still_open(context: grpc.aio.ServicerContext) -> bool:
    """Whether the client really finished its request stream. grpc.aio ends the stream the same
    way when the call was cancelled (client cancel, deadline, lost connection), and only tells
    the handler later by cancelling its task. By the time the stream has ended, core has marked
    a cancelled call as such and fails any operation on it, so try a harmless one: sending the
    initial metadata (the response would send it anyway)."""
    try:
        await context.send_initial_metadata(())
    except Exception:  # grpc's ExecuteBatchError, or the server stopping
        return False
    return True


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def Put(self, request_iterator: AsyncIterator[storage_pb2.PutRequest],
                  context: grpc.aio.ServicerContext) -> storage_pb2.ObjectInfo:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("part") != "header":
            ERRORS.labels(grpc.StatusCode.INVALID_ARGUMENT.name).inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "the first message of Put must be a header (key, content_type)")
        header = first.header

        async def chunks() -> AsyncIterator[bytes]:
            async for request in requests:
                if request.WhichOneof("part") == "header":
                    raise InvalidArgument("only the first message of Put may carry a header")
                if request.chunk:
                    BYTES_IN.inc(len(request.chunk))
                    yield request.chunk
            if not await _still_open(context):
                raise asyncio.CancelledError  # a cut-off upload: the backend stores nothing

        try:
            info = await self.backend.put(header.key, header.content_type, chunks(), header.max_size,
                                          if_absent=header.if_absent)
        except Exception as exc:
            await _abort(context, exc)
        return to_proto(info)

    async def Get(self, request: storage_pb2.GetRequest,
                  context: grpc.aio.ServicerContext) -> AsyncIterator[storage_pb2.GetResponse]:
        try:
            info, body = await self.backend.open(request.key, request.offset, request.length)
        except Exception as exc:
            await _abort(context, exc)
        async with aclosing(body):
            yield storage_pb2.GetResponse(info=to_proto(info))
            try:
                async for chunk in body:
                    BYTES_OUT.inc(len(chunk))
                    yield storage_pb2.GetResponse(chunk=chunk)
            except Exception as exc:
                await _abort(context, exc)

    async def Stat(self, request: storage_pb2.StatRequest,
                   context: grpc.aio.ServicerContext) -> storage_pb2.ObjectInfo:
        try:
            return to_proto(await self.backend.stat(request.key))
        except Exception as exc:
            await _abort(context, exc)
        raise AssertionError("unreachable")

    async def Delete(self, request: storage_pb2.DeleteRequest,
                     context: grpc.aio.ServicerContext) -> storage_pb2.DeleteResponse:
        try:
            deleted = await self.backend.delete(request.key)
        except Exception as exc:
            await _abort(context, exc)
        return storage_pb2.DeleteResponse(deleted=int(deleted))

    async def DeletePrefix(self, request: storage_pb2.DeletePrefixRequest,
                           context: grpc.aio.ServicerContext) -> storage_pb2.DeleteResponse:
        try:
            deleted = await self.backend.delete_prefix(request.prefix)
        except Exception as exc:
            await _abort(context, exc)
        return storage_pb2.DeleteResponse(deleted=deleted)

    async def List(self, request: storage_pb2.ListRequest,
                   context: grpc.aio.ServicerContext) -> storage_pb2.ListResponse:
        try:
            if request.page_size < 0:
                raise InvalidArgument(f"page_size must not be negative (got {request.page_size})")
            page_size = min(request.page_size or MAX_LIST_PAGE, MAX_LIST_PAGE)
            objects, token = await self.backend.list(request.prefix, page_size, request.page_token)
        except Exception as exc:
            await _abort(context, exc)
        return storage_pb2.ListResponse(objects=[to_proto(o) for o in objects], next_page_token=token)
