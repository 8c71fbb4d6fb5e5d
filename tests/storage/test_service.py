"""StorageService over a real grpc.aio server on a free port, called through the generated stubs."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import pytest

from services.common.gen.radiology.v1 import storage_pb2, storage_pb2_grpc
from services.common.grpc_server import GRPC_OPTIONS, create_server
from services.storage.backends import CHUNK_SIZE, Backend, LocalBackend, S3Backend
from services.storage.service import SERVICE_NAME, StorageServicer

from .helpers import free_port_closed, make_s3, rss_bytes

Stub = storage_pb2_grpc.StorageServiceStub
Code = grpc.StatusCode


async def serve_at(backend: Backend) -> AsyncIterator[str]:
    """The address of a StorageService over `backend`, for as long as the caller iterates."""
    server = create_server()
    storage_pb2_grpc.add_StorageServiceServicer_to_server(StorageServicer(backend), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def serve(backend: Backend) -> AsyncIterator[Stub]:
    async for addr in serve_at(backend):
        channel = grpc.aio.insecure_channel(addr, options=GRPC_OPTIONS)
        try:
            yield Stub(channel)
        finally:
            await channel.close()


@pytest.fixture
async def stub(backend: Backend) -> AsyncIterator[Stub]:
    async for s in serve(backend):
        yield s


def put_requests(key: str, data: bytes, content_type: str = "application/octet-stream",
                 max_size: int = 0, chunk: int = CHUNK_SIZE,
                 if_absent: bool = False) -> Iterable[storage_pb2.PutRequest]:
    yield storage_pb2.PutRequest(header=storage_pb2.PutHeader(key=key, content_type=content_type,
                                                             max_size=max_size, if_absent=if_absent))
    for pos in range(0, len(data), chunk):
        yield storage_pb2.PutRequest(chunk=data[pos : pos + chunk])


async def get(stub: Stub, key: str, offset: int = 0, length: int = 0,
              ) -> tuple[storage_pb2.ObjectInfo, bytes, list[int]]:
    responses = [r async for r in stub.Get(storage_pb2.GetRequest(key=key, offset=offset, length=length))]
    assert responses[0].WhichOneof("part") == "info"
    assert all(r.WhichOneof("part") == "chunk" for r in responses[1:])
    sizes = [len(r.chunk) for r in responses[1:]]
    return responses[0].info, b"".join(r.chunk for r in responses[1:]), sizes


async def expect_error(call: object, code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if isinstance(call, grpc.aio.UnaryStreamCall):
            async for _ in call:  # a stream fails on iteration
                pass
        else:
            await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    assert text in caught.value.details()
    assert "Traceback" not in caught.value.details()


def test_service_name() -> None:
    assert SERVICE_NAME == "radiology.v1.StorageService"


async def test_put_get_stat_delete_roundtrip(stub: Stub) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 12345)
    info = await stub.Put(put_requests("alice/j/scan.nii.gz", data, "application/gzip", chunk=300_000))
    assert (info.key, info.size, info.content_type) == ("alice/j/scan.nii.gz", len(data), "application/gzip")
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.etag and info.modified_at > 0

    got_info, got, sizes = await get(stub, "alice/j/scan.nii.gz")
    assert got == data and got_info == info
    assert sizes == [CHUNK_SIZE, CHUNK_SIZE, 12345]  # streamed in 1 MiB chunks

    _, part, sizes = await get(stub, "alice/j/scan.nii.gz", offset=CHUNK_SIZE - 10, length=CHUNK_SIZE + 20)
    assert part == data[CHUNK_SIZE - 10 : 2 * CHUNK_SIZE + 10]
    assert max(sizes) <= CHUNK_SIZE

    assert await stub.Stat(storage_pb2.StatRequest(key="alice/j/scan.nii.gz")) == info
    assert (await stub.Delete(storage_pb2.DeleteRequest(key="alice/j/scan.nii.gz"))).deleted == 1
    assert (await stub.Delete(storage_pb2.DeleteRequest(key="alice/j/scan.nii.gz"))).deleted == 0


async def test_a_write_once_put_of_an_existing_key_is_already_exists(stub: Stub) -> None:
    first = await stub.Put(put_requests("alice/j/out.png", b"first", if_absent=True))
    await expect_error(stub.Put(put_requests("alice/j/out.png", b"second", if_absent=True)),
                       grpc.StatusCode.ALREADY_EXISTS, "written once")
    assert await stub.Stat(storage_pb2.StatRequest(key="alice/j/out.png")) == first


async def test_delete_prefix_counts(stub: Stub) -> None:
    for key in ("bob/j1/a", "bob/j1/b", "bob/j2/a"):
        await stub.Put(put_requests(key, b"x"))
    assert (await stub.DeletePrefix(storage_pb2.DeletePrefixRequest(prefix="bob/j1/"))).deleted == 2
    assert (await stub.Stat(storage_pb2.StatRequest(key="bob/j2/a"))).size == 1


async def test_list_over_grpc(stub: Stub) -> None:
    for key in ("carol/j1/a", "carol/j1/b", "carol/j2/a"):
        await stub.Put(put_requests(key, b"xy"))
    first = await stub.List(storage_pb2.ListRequest(prefix="carol/", page_size=2))
    assert [o.key for o in first.objects] == ["carol/j1/a", "carol/j1/b"] and first.next_page_token
    rest = await stub.List(storage_pb2.ListRequest(prefix="carol/", page_token=first.next_page_token))
    assert [o.key for o in rest.objects] == ["carol/j2/a"] and rest.next_page_token == ""
    assert rest.objects[0].size == 2 and rest.objects[0].modified_at > 0
    await expect_error(stub.List(storage_pb2.ListRequest(page_size=-1)), Code.INVALID_ARGUMENT, "page_size")
    await expect_error(stub.List(storage_pb2.ListRequest(prefix="carol")), Code.INVALID_ARGUMENT, "'/'")


async def test_error_status_codes(stub: Stub) -> None:
    await stub.Put(put_requests("u/j/ten", b"0123456789"))

    def chunk_first() -> Iterable[storage_pb2.PutRequest]:
        yield storage_pb2.PutRequest(chunk=b"data before the header")

    def two_headers() -> Iterable[storage_pb2.PutRequest]:
        yield from put_requests("u/j/two", b"abc")
        yield storage_pb2.PutRequest(header=storage_pb2.PutHeader(key="u/j/other"))

    no_header = "first message of Put must be a header"
    await expect_error(stub.Put(chunk_first()), Code.INVALID_ARGUMENT, no_header)
    await expect_error(stub.Put(iter(())), Code.INVALID_ARGUMENT, no_header)
    await expect_error(stub.Put(two_headers()), Code.INVALID_ARGUMENT, "only the first message")
    await expect_error(stub.Put(put_requests("../etc/passwd", b"x")), Code.INVALID_ARGUMENT, "'..'")
    await expect_error(stub.Put(put_requests("u/j/big", os.urandom(3 * CHUNK_SIZE), max_size=CHUNK_SIZE)),
                       Code.RESOURCE_EXHAUSTED, f"larger than the limit of {CHUNK_SIZE} bytes")
    await expect_error(stub.Stat(storage_pb2.StatRequest(key="u/j/big")), Code.NOT_FOUND, "not found")
    await expect_error(stub.Stat(storage_pb2.StatRequest(key="u/j/two")), Code.NOT_FOUND, "not found")
    await expect_error(stub.Get(storage_pb2.GetRequest(key="u/j/missing")), Code.NOT_FOUND,
                       "'u/j/missing' not found")
    await expect_error(stub.Get(storage_pb2.GetRequest(key="u/j/ten", offset=11)), Code.OUT_OF_RANGE,
                       "offset 11 is beyond the end of 'u/j/ten' (10 bytes)")
    await expect_error(stub.Get(storage_pb2.GetRequest(key="a\x00b")), Code.INVALID_ARGUMENT, "NUL")
    await expect_error(stub.Delete(storage_pb2.DeleteRequest(key="/abs")), Code.INVALID_ARGUMENT, "'/'")
    await expect_error(stub.DeletePrefix(storage_pb2.DeletePrefixRequest(prefix="u/j")),
                       Code.INVALID_ARGUMENT, "must end with '/'")
    # The object that was refused for size left nothing behind; the good one is intact.
    assert (await stub.Stat(storage_pb2.StatRequest(key="u/j/ten"))).size == 10


async def test_unreachable_s3_is_unavailable() -> None:
    backend = S3Backend(f"127.0.0.1:{free_port_closed()}", "down-bucket", "test", "test")
    async for stub in serve(backend):
        await expect_error(stub.Stat(storage_pb2.StatRequest(key="u/j/a")), Code.UNAVAILABLE, "unavailable")
        await expect_error(stub.Put(put_requests("u/j/a", b"x")), Code.UNAVAILABLE, "unavailable")
        await expect_error(stub.Get(storage_pb2.GetRequest(key="u/j/a")), Code.UNAVAILABLE, "unavailable")


@pytest.mark.parametrize(("kind", "total_chunks"),
                         [("local", 200), pytest.param("s3", 100, marks=pytest.mark.s3)])
async def test_large_objects_stream_through_without_growing_memory(
    kind: str, total_chunks: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Put and Get 200 MiB (100 MiB on S3) in 1 MiB chunks; the process running both client and
    server must stay flat (buffering the object anywhere would add its whole size)."""
    block = os.urandom(CHUNK_SIZE)
    backend = LocalBackend(tmp_path) if kind == "local" else make_s3(request.getfixturevalue("s3_endpoint"))
    async for stub in serve(backend):
        await stub.Put(put_requests("warm/up/x", block * 4))  # let gRPC allocate its buffers
        await get(stub, "warm/up/x")
        gc.collect()
        baseline = peak = rss_bytes()

        def requests() -> Iterable[storage_pb2.PutRequest]:
            nonlocal peak
            yield storage_pb2.PutRequest(header=storage_pb2.PutHeader(key="big/job/volume.nii"))
            for i in range(total_chunks):
                # Vary each chunk a little so the hash proves every byte arrived in order.
                yield storage_pb2.PutRequest(chunk=i.to_bytes(4, "big") + block[4:])
                if i % 8 == 0:
                    peak = max(peak, rss_bytes())

        expected = hashlib.sha256()
        for i in range(total_chunks):
            expected.update(i.to_bytes(4, "big") + block[4:])

        info = await stub.Put(requests())
        assert info.size == total_chunks * CHUNK_SIZE
        assert info.sha256 == expected.hexdigest()

        digest, received, count = hashlib.sha256(), 0, 0
        async for response in stub.Get(storage_pb2.GetRequest(key="big/job/volume.nii")):
            if response.WhichOneof("part") == "chunk":
                assert len(response.chunk) <= CHUNK_SIZE
                digest.update(response.chunk)
                received += len(response.chunk)
                count += 1
                if count % 8 == 0:
                    peak = max(peak, rss_bytes())
        assert received == info.size and digest.hexdigest() == info.sha256
        growth = peak - baseline
        assert growth < 60 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB"



class ClosingWatch:
    """Wraps a real backend and counts bodies opened and closed."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.opened = self.closed = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)

    async def open(self, key: str, offset: int = 0, length: int = 0) -> tuple[object, object]:
        info, body = await self.backend.open(key, offset, length)
        self.opened += 1
        real_close = body.aclose

        async def aclose() -> None:
            self.closed += 1
            await real_close()

        body.aclose = aclose  # type: ignore[method-assign]
        return info, body


async def test_get_cancelled_by_the_client_closes_the_object(backend: Backend) -> None:
    watch = ClosingWatch(backend)
    async for stub in serve(watch):  # type: ignore[arg-type]
        await stub.Put(put_requests("u/j/long", os.urandom(4 * CHUNK_SIZE)))
        for _ in range(3):
            call = stub.Get(storage_pb2.GetRequest(key="u/j/long"))
            await call.read()  # info
            await call.read()  # first chunk
            call.cancel()
        for _ in range(100):  # the server notices the cancellations
            if watch.closed == 3:
                break
            await asyncio.sleep(0.02)
        # The file or HTTP response of every abandoned read was released at once.
        assert (watch.opened, watch.closed) == (3, 3)


async def test_readiness_of_each_backend(tmp_path: Path, s3_endpoint: str) -> None:
    """What the health status reports: an unreachable S3 or a vanished folder is not ready."""
    down = S3Backend(f"127.0.0.1:{free_port_closed()}", "down-bucket", "test", "test")
    problem = await down.ready()
    assert problem is not None and "unreachable" in problem
    assert await make_s3(s3_endpoint).ready() is None
    local = LocalBackend(tmp_path / "objects")
    assert await local.ready() is None
    shutil.rmtree(tmp_path / "objects")
    problem = await local.ready()
    assert problem is not None and "not writable" in problem


class PutWatch:
    """Wraps a real backend: counts the bytes its puts consumed and the puts that have ended."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.consumed = self.ended = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)

    async def put(self, key: str, content_type: str, chunks: AsyncIterator[bytes],
                  max_size: int = 0, *, if_absent: bool = False) -> object:
        async def counted() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                self.consumed += len(chunk)
                yield chunk

        try:
            return await self.backend.put(key, content_type, counted(), max_size, if_absent=if_absent)
        finally:
            self.ended += 1


async def wait_for(condition: object, what: str, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.005)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def cut_off(key: str, size: int, forever: asyncio.Event) -> AsyncIterator[storage_pb2.PutRequest]:
    """A Put that sends `size` bytes of its object, then never the rest."""
    yield storage_pb2.PutRequest(header=storage_pb2.PutHeader(key=key))
    for pos in range(0, size, CHUNK_SIZE):
        yield storage_pb2.PutRequest(chunk=b"X" * min(CHUNK_SIZE, size - pos))
    await forever.wait()


@pytest.mark.parametrize("kind", ["local", "local-nofsync", pytest.param("s3", marks=pytest.mark.s3)])
async def test_cancelled_puts_never_store_anything(kind: str, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    """A Put whose call ends early (client cancel, deadline, closed channel) after the server got
    part of the object must neither replace the existing object nor create a new one: the
    gateway relies on it when an upload is refused or the browser goes away. Without fsync the
    local commit is quick enough to beat the news of the cancellation by far."""
    backend: Backend = (make_s3(request.getfixturevalue("s3_endpoint")) if kind == "s3"
                        else LocalBackend(tmp_path, fsync=kind == "local"))
    old = os.urandom(3 * CHUNK_SIZE)
    old_sha = hashlib.sha256(old).hexdigest()
    watch = PutWatch(backend)
    forever = asyncio.Event()
    async for addr in serve_at(watch):  # type: ignore[arg-type]
        main = grpc.aio.insecure_channel(addr, options=GRPC_OPTIONS)
        stub = Stub(main)
        await stub.Put(put_requests("u/j/obj", old))

        async def only_the_old_object(stub: Stub = stub) -> None:
            info = await stub.Stat(storage_pb2.StatRequest(key="u/j/obj"))
            assert (info.size, info.sha256) == (len(old), old_sha)
            listed = await stub.List(storage_pb2.ListRequest(prefix="u/"))
            assert [o.key for o in listed.objects] == ["u/j/obj"]

        for trial in range(20):
            # Both local write paths: small (one thread hop) and streamed (over CHUNK_SIZE).
            size = 1000 if trial % 2 else CHUNK_SIZE + 1000
            key = "u/j/obj" if trial % 4 < 2 else f"u/j/new{trial}"
            how = ("cancel", "deadline", "channel")[trial % 3]
            consumed, ended = watch.consumed, watch.ended
            channel = grpc.aio.insecure_channel(addr, options=GRPC_OPTIONS)
            call = Stub(channel).Put(cut_off(key, size, forever),
                                     timeout=0.5 if how == "deadline" else None)
            await wait_for(lambda: watch.consumed == consumed + size, "the bytes to arrive")  # noqa: B023
            if how == "cancel":
                call.cancel()
            elif how == "channel":
                await channel.close()
            with pytest.raises((asyncio.CancelledError, grpc.aio.AioRpcError)):
                await call
            await wait_for(lambda: watch.ended == ended + 1, "the put to end")  # noqa: B023
            await channel.close()
            await only_the_old_object()
        await asyncio.sleep(0.3)  # a commit left running in a thread would be done by now
        await only_the_old_object()
        _, data, _ = await get(stub, "u/j/obj")
        assert hashlib.sha256(data).hexdigest() == old_sha
        await main.close()
