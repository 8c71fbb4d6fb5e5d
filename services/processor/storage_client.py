"""Streaming file transfers between a local path and StorageService, over one long-lived channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from services.common.gen.radiology.v1 import storage_pb2, storage_pb2_grpc
from services.common.grpc_client import call_metadata
from services.common.sniff import SNIFF_BYTES, suffix_for

CHUNK_SIZE = 1024 * 1024
# Transfers may be long; the deadline grows with the size at this pessimistic rate.
_MIN_BYTES_PER_SECOND = 16 * 1024 * 1024


class StorageClient:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = storage_pb2_grpc.StorageServiceStub(channel)
        self._timeout = timeout

    async def download(self, key: str, dest: Path) -> storage_pb2.ObjectInfo:
        """Stream an object into `dest`. Each message must arrive within the rpc timeout, so a
        large file may take as long as it needs while a stalled transfer fails."""
        call = self._stub.Get(storage_pb2.GetRequest(key=key), metadata=call_metadata())
        info = storage_pb2.ObjectInfo()
        try:
            with dest.open("wb") as f:
                while True:
                    try:
                        msg = await asyncio.wait_for(call.read(), self._timeout)
                    except TimeoutError:
                        raise StorageStalled(f"no data from storage for {self._timeout:.0f}s") from None
                    if msg is grpc.aio.EOF:
                        break
                    if msg.HasField("info"):
                        info = msg.info
                    else:
                        # A 1 MiB write goes to the page cache; not worth a thread hop.
                        f.write(msg.chunk)
        finally:
            call.cancel()  # no-op after EOF; frees the stream on any error
        return info

    async def download_input(self, key: str, folder: Path) -> Path:
        """Stream an input into `folder`, named "input" plus the extension its content calls for
        (never the client's file name: readers pick by extension, names can lie)."""
        path = folder / "input"
        await self.download(key, path)
        with path.open("rb") as f:
            head = f.read(SNIFF_BYTES)
        return path.rename(path.with_name("input" + suffix_for(head)))

    async def upload(self, key: str, path: Path, content_type: str) -> storage_pb2.ObjectInfo:
        size = path.stat().st_size
        timeout = self._timeout + size / _MIN_BYTES_PER_SECOND
        return await self._stub.Put(_put_requests(key, path, content_type), timeout=timeout,
                                    metadata=call_metadata())


class StorageStalled(Exception):
    """A download stopped making progress (treated like DEADLINE_EXCEEDED: transient)."""


async def _put_requests(key: str, path: Path, content_type: str) -> AsyncIterator[storage_pb2.PutRequest]:
    yield storage_pb2.PutRequest(header=storage_pb2.PutHeader(key=key, content_type=content_type))
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            yield storage_pb2.PutRequest(chunk=chunk)
