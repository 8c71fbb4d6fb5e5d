"""The one StorageService client (gateway, processor, jobs): streaming Put and Get over a long-lived
grpc.aio channel. Streams have no overall deadline (a 2 GiB transfer takes as long as it needs);
instead every message must move within `timeout`, which catches a stuck storage just as well.

Every failure is a grpc.aio.AioRpcError, including the ones the client detects itself (a stall is a
DEADLINE_EXCEEDED, a broken protocol INTERNAL), so callers map one exception type by its code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.gen.radiology.v1 import storage_pb2, storage_pb2_grpc
from services.common.grpc_client import call_metadata
from services.common.sniff import SNIFF_BYTES, suffix_for

CHUNK_SIZE = 1024 * 1024  # 1 MiB: the unit of storage reads and of every gRPC message
QUEUE_CHUNKS = 2  # chunks in flight per Put: the back-pressure window


class StorageStalled(grpc.aio.AioRpcError):
    """A transfer that stopped moving: a DEADLINE_EXCEEDED (transient) raised by the client itself."""

    def __init__(self, details: str) -> None:
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, details=details)


def _broken(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, details=details)


class ObjectWriter:
    """One Put fed by `write` through a bounded queue, so a slow storage slows the producer instead
    of growing memory. End with `close` (the stored object's info) or `abort`."""

    def __init__(self, stub: storage_pb2_grpc.StorageServiceStub, header: storage_pb2.PutHeader,
                 stall: float) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUE_CHUNKS)
        self._buf = bytearray()
        self._stall = stall
        self._call = stub.Put(self._requests(header), metadata=call_metadata())
        self._result: asyncio.Future[storage_pb2.ObjectInfo] = asyncio.ensure_future(self._call)

    async def _requests(self, header: storage_pb2.PutHeader) -> AsyncIterator[storage_pb2.PutRequest]:
        yield storage_pb2.PutRequest(header=header)
        while (chunk := await self._queue.get()) is not None:
            yield storage_pb2.PutRequest(chunk=chunk)

    def _raise_from_call(self) -> None:
        self._result.result()  # raises the call's error
        raise _broken("storage ended the upload early")

    async def _push(self, item: bytes | None) -> None:
        if self._result.done():
            self._raise_from_call()
        try:
            self._queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            pass
        # Wait for room, but not forever, and not past the call failing meanwhile.
        putter = asyncio.ensure_future(self._queue.put(item))
        done, _ = await asyncio.wait(
            {putter, self._result}, timeout=self._stall, return_when="FIRST_COMPLETED"
        )
        if putter in done:
            return
        putter.cancel()
        if self._result in done:
            self._raise_from_call()
        raise StorageStalled("storage stopped accepting data")

    async def write(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= CHUNK_SIZE:
            chunk = bytes(self._buf[:CHUNK_SIZE])
            del self._buf[:CHUNK_SIZE]
            await self._push(chunk)

    async def close(self) -> storage_pb2.ObjectInfo:
        if self._buf:
            await self._push(bytes(self._buf))
            self._buf.clear()
        await self._push(None)
        try:
            return await asyncio.wait_for(asyncio.shield(self._result), self._stall)
        except TimeoutError:
            raise StorageStalled("storage did not confirm the upload") from None

    def abort(self) -> None:
        self._call.cancel()
        self._result.cancel()


class ObjectReader:
    """The bytes of one Get as an async iterator of chunks. Any error, or `cancel`, ends the call."""

    def __init__(self, call: Any, stall: float) -> None:
        self._call = call
        self._stall = stall

    async def read(self) -> storage_pb2.GetResponse | None:
        """The next message, None at the end."""
        try:
            msg = await asyncio.wait_for(self._call.read(), self._stall)
        except TimeoutError:
            self._call.cancel()
            raise StorageStalled(f"no data from storage for {self._stall:g}s") from None
        except BaseException:
            self._call.cancel()  # including a cancelled task: the client went away
            raise
        return None if msg is grpc.aio.EOF else msg

    def __aiter__(self) -> ObjectReader:
        return self

    async def __anext__(self) -> bytes:
        # read(), not `async for`: gRPC forbids mixing the two styles on one call.
        while (msg := await self.read()) is not None:
            if msg.chunk:
                return msg.chunk
        raise StopAsyncIteration

    def cancel(self) -> None:
        self._call.cancel()


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            yield chunk


class StorageClient:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = storage_pb2_grpc.StorageServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)
        self.timeout = timeout  # of a unary call, and between two messages of a stream

    async def serving(self, timeout: float = 2.0) -> bool:
        """True when the storage service answers its health check SERVING (a cheap probe: no
        object is read or written)."""
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def writer(self, key: str, content_type: str, max_size: int = 0,
               if_absent: bool = False) -> ObjectWriter:
        header = storage_pb2.PutHeader(key=key, content_type=content_type, max_size=max_size,
                                       if_absent=if_absent)
        return ObjectWriter(self._stub, header, self.timeout)

    async def put(self, key: str, content_type: str, chunks: AsyncIterable[bytes],
                  max_size: int = 0, if_absent: bool = False) -> storage_pb2.ObjectInfo:
        writer = self.writer(key, content_type, max_size, if_absent)
        try:
            async for chunk in chunks:
                await writer.write(chunk)
            return await writer.close()
        except BaseException:
            writer.abort()
            raise

    async def upload(self, key: str, path: Path, content_type: str,
                     if_absent: bool = False) -> storage_pb2.ObjectInfo:
        """Store a local file under `key` (`if_absent`: write once, ALREADY_EXISTS otherwise)."""
        return await self.put(key, content_type, _file_chunks(path), if_absent=if_absent)

    async def open(self, key: str, offset: int = 0,
                   length: int = 0) -> tuple[storage_pb2.ObjectInfo, ObjectReader]:
        """Start a Get of `length` bytes from `offset` (0 = to the end) and read the object's info,
        so that a missing object fails here, before any byte is handed on."""
        request = storage_pb2.GetRequest(key=key, offset=offset, length=length)
        reader = ObjectReader(self._stub.Get(request, metadata=call_metadata()), self.timeout)
        first = await reader.read()
        if first is None or not first.HasField("info"):
            reader.cancel()
            raise _broken("Get did not start with the object info")
        return first.info, reader

    async def download(self, key: str, dest: Path) -> storage_pb2.ObjectInfo:
        info, body = await self.open(key)
        try:
            with dest.open("wb") as f:
                async for chunk in body:
                    f.write(chunk)  # 1 MiB goes to the page cache: not worth a thread hop
        finally:
            body.cancel()  # no-op after the end; frees the stream on any error
        return info

    async def download_input(self, key: str, folder: Path) -> Path:
        """Stream an input into `folder`, named "input" plus the extension its content calls for
        (never the client's file name: readers pick by extension, names can lie)."""
        path = folder / "input"
        await self.download(key, path)
        with path.open("rb") as f:
            head = f.read(SNIFF_BYTES)
        return path.rename(path.with_name("input" + suffix_for(head)))

    async def stat(self, key: str) -> storage_pb2.ObjectInfo:
        return await self._stub.Stat(
            storage_pb2.StatRequest(key=key), timeout=self.timeout, metadata=call_metadata()
        )

    async def delete(self, key: str) -> bool:
        reply = await self._stub.Delete(
            storage_pb2.DeleteRequest(key=key), timeout=self.timeout, metadata=call_metadata()
        )
        return reply.deleted > 0

    async def delete_prefix(self, prefix: str) -> int:
        reply = await self._stub.DeletePrefix(
            storage_pb2.DeletePrefixRequest(prefix=prefix), timeout=self.timeout, metadata=call_metadata()
        )
        return reply.deleted

    async def list(self, prefix: str = "", page_token: str = "",
                   page_size: int = 0) -> storage_pb2.ListResponse:
        return await self._stub.List(
            storage_pb2.ListRequest(prefix=prefix, page_size=page_size, page_token=page_token),
            timeout=self.timeout, metadata=call_metadata(),
        )
