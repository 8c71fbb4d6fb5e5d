"""The shared StorageService client against the real servicer over a LocalBackend, and against a
stuck storage (a real grpc.aio server whose handlers never answer)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services.common.gen.radiology.v1 import storage_pb2, storage_pb2_grpc
from services.common.storage_client import CHUNK_SIZE, QUEUE_CHUNKS, StorageClient, StorageStalled
from services.storage.backends import LocalBackend
from services.storage.service import StorageServicer

DATA = os.urandom(3 * CHUNK_SIZE + 12345)


async def _serve(servicer: storage_pb2_grpc.StorageServiceServicer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    storage_pb2_grpc.add_StorageServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _client(servicer: storage_pb2_grpc.StorageServiceServicer,
                  timeout: float) -> AsyncIterator[StorageClient]:
    server, addr = await _serve(servicer)
    channel = grpc.aio.insecure_channel(addr)
    try:
        yield StorageClient(channel, timeout)
    finally:
        await channel.close()
        await server.stop(0)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[StorageClient]:
    backend = LocalBackend(tmp_path / "objects", fsync=False)
    async for c in _client(StorageServicer(backend), 5.0):
        yield c
    await backend.close()


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for pos in range(0, len(data), size):
        yield data[pos : pos + size]


async def _read(body: AsyncIterator[bytes]) -> tuple[bytes, list[int]]:
    chunks = [c async for c in body]
    return b"".join(chunks), [len(c) for c in chunks]


async def test_put_open_stat_round_trip(client: StorageClient) -> None:
    # Odd-sized pieces in, 1 MiB messages on the wire, the same bytes out.
    info = await client.put("u/j/scan.bin", "application/x-test", _pieces(DATA, 300_001))
    assert info.size == len(DATA) and info.sha256 == hashlib.sha256(DATA).hexdigest()

    info, body = await client.open("u/j/scan.bin")
    data, sizes = await _read(body)
    assert data == DATA and max(sizes) <= CHUNK_SIZE
    assert info.size == len(DATA) and info.content_type == "application/x-test"

    info, body = await client.open("u/j/scan.bin", CHUNK_SIZE - 10, CHUNK_SIZE + 20)
    assert (await _read(body))[0] == DATA[CHUNK_SIZE - 10 : 2 * CHUNK_SIZE + 10]
    assert info.size == len(DATA)  # the whole object's info, whatever the range

    assert (await client.stat("u/j/scan.bin")).etag == info.etag


async def test_upload_download_and_input_named_by_content(client: StorageClient, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    assert (await client.upload("u/j/a.bin", src, "application/octet-stream")).size == len(DATA)
    dest = tmp_path / "dest.bin"
    assert (await client.download("u/j/a.bin", dest)).size == len(DATA)
    assert dest.read_bytes() == DATA

    png = b"\x89PNG\r\n\x1a\n" + bytes(100)
    await client.put("u/j/photo.dcm", "image/png", _pieces(png, 64))  # the name lies
    folder = tmp_path / "in"
    folder.mkdir()
    path = await client.download_input("u/j/photo.dcm", folder)
    assert path == folder / "input.png" and path.read_bytes() == png


async def test_delete_and_delete_prefix(client: StorageClient) -> None:
    for name in ("a", "b", "c"):
        await client.put(f"u/j/{name}", "text/plain", _pieces(b"x", 1))
    await client.put("u/k/a", "text/plain", _pieces(b"y", 1))
    assert await client.delete("u/j/a") is True
    assert await client.delete("u/j/a") is False
    assert await client.delete_prefix("u/j/") == 2
    assert (await client.stat("u/k/a")).size == 1


async def test_errors_are_grpc_status_codes(client: StorageClient) -> None:
    for call in (client.open("u/j/none"), client.stat("u/j/none")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.put("u/j/big", "x", _pieces(DATA, CHUNK_SIZE), max_size=CHUNK_SIZE)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stat("../etc/passwd")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class StuckStorage(storage_pb2_grpc.StorageServiceServicer):
    """Put never reads its stream; Get sends the info (or, for "u/j/raw", a chunk) and then nothing."""

    async def Put(self, request_iterator, context):  # noqa: N802 (gRPC method name)
        await asyncio.sleep(3600)

    async def Get(self, request, context):  # noqa: N802
        if request.key == "u/j/raw":
            yield storage_pb2.GetResponse(chunk=b"data before the info")
        yield storage_pb2.GetResponse(info=storage_pb2.ObjectInfo(key=request.key, size=10))
        await asyncio.sleep(3600)


@pytest.fixture
async def stuck() -> AsyncIterator[StorageClient]:
    async for c in _client(StuckStorage(), 0.3):
        yield c


async def test_a_stuck_put_fails_within_the_stall_timeout_holding_little(stuck: StorageClient) -> None:
    writer = stuck.writer("u/j/a", "x")
    start = time.monotonic()
    written = 0
    with pytest.raises(StorageStalled) as err:
        while True:
            await writer.write(bytes(CHUNK_SIZE))
            written += 1
    writer.abort()
    assert time.monotonic() - start < 3
    # Back-pressure: a few MiB (the queue and gRPC's flow-control window), then the stall.
    assert QUEUE_CHUNKS <= written < 16
    # A stall is a DEADLINE_EXCEEDED, so callers handle every failure as one AioRpcError.
    assert isinstance(err.value, grpc.aio.AioRpcError)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_stuck_get_fails_per_message(stuck: StorageClient, tmp_path: Path) -> None:
    info, body = await stuck.open("u/j/a")
    assert info.size == 10
    start = time.monotonic()
    with pytest.raises(StorageStalled):
        await anext(body)
    assert time.monotonic() - start < 3
    with pytest.raises(StorageStalled):
        await stuck.download("u/j/a", tmp_path / "a")


async def test_a_get_without_info_first_is_internal(stuck: StorageClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stuck.open("u/j/raw")
    assert err.value.code() == grpc.StatusCode.INTERNAL
