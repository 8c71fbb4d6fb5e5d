"""Behaviour every backend promises, run against a local folder and a real S3-protocol server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator

import pytest

from services.storage.backends import (
    CHUNK_SIZE,
    AlreadyExists,
    Backend,
    InvalidArgument,
    InvalidKey,
    LocalBackend,
    NotFound,
    OutOfRange,
    TooLarge,
)

from .helpers import read_all, stream
from .test_keys import HOSTILE_KEYS

DATA = os.urandom(3 * CHUNK_SIZE + CHUNK_SIZE // 2)  # 3.5 MiB
UNEVEN = (1, 65_537, 1_000_003, 7, 2_500_000)


async def test_multichunk_roundtrip_records_size_sha256_and_type(backend: Backend) -> None:
    info = await backend.put("alice/job1/scan.dcm", "application/dicom", stream(DATA, UNEVEN))
    assert info.key == "alice/job1/scan.dcm"
    assert info.size == len(DATA)
    assert info.sha256 == hashlib.sha256(DATA).hexdigest()
    assert info.content_type == "application/dicom"
    assert info.etag and info.modified_at > 0

    stat = await backend.stat("alice/job1/scan.dcm")
    assert (stat.size, stat.sha256, stat.content_type, stat.etag) == (
        info.size, info.sha256, info.content_type, info.etag)

    got_info, body = await backend.open("alice/job1/scan.dcm")
    data, sizes = await read_all(body)
    assert data == DATA
    assert got_info.sha256 == info.sha256
    assert len(sizes) == 4 and max(sizes) <= CHUNK_SIZE


async def test_empty_object_and_default_content_type(backend: Backend) -> None:
    info = await backend.put("u/j/empty", "", stream(b""))
    assert (info.size, info.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert info.content_type == "application/octet-stream"
    _, body = await backend.open("u/j/empty")
    assert await read_all(body) == (b"", [])


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, 0, slice(None)),  # whole object
        (10, 100, slice(10, 110)),
        (CHUNK_SIZE - 3, 6, slice(CHUNK_SIZE - 3, CHUNK_SIZE + 3)),  # across a chunk border
        (len(DATA) - 1000, 0, slice(len(DATA) - 1000, None)),  # tail
        (len(DATA) - 5, 100, slice(len(DATA) - 5, None)),  # length past the end is clamped
        (len(DATA), 0, slice(len(DATA), None)),  # at the end: nothing
        (5, 2 * CHUNK_SIZE + 1, slice(5, 2 * CHUNK_SIZE + 6)),
    ],
)
async def test_ranged_reads(backend: Backend, offset: int, length: int, expected: slice) -> None:
    await backend.put("u/j/range", "image/png", stream(DATA))
    info, body = await backend.open("u/j/range", offset, length)
    data, sizes = await read_all(body)
    assert data == DATA[expected]
    assert info.size == len(DATA)  # info describes the whole object, not the range
    assert all(0 < s <= CHUNK_SIZE for s in sizes)


async def test_range_errors(backend: Backend) -> None:
    await backend.put("u/j/small", "", stream(b"0123456789"))
    with pytest.raises(OutOfRange, match="offset 11 is beyond the end of 'u/j/small' \\(10 bytes\\)"):
        await backend.open("u/j/small", 11)
    with pytest.raises(InvalidArgument, match="must not be negative"):
        await backend.open("u/j/small", -1)
    with pytest.raises(InvalidArgument, match="must not be negative"):
        await backend.open("u/j/small", 0, -5)


async def test_missing_objects_are_not_found(backend: Backend) -> None:
    await backend.put("u/j/a/b", "", stream(b"x"))
    for key in ("u/j/nope", "u/j/a", "u/j/a/b/c"):
        with pytest.raises(NotFound, match=f"object '{key}' not found"):
            await backend.stat(key)
        with pytest.raises(NotFound):
            await backend.open(key)


async def test_overwrite_replaces_atomically(backend: Backend) -> None:
    old, new = os.urandom(2 * CHUNK_SIZE), os.urandom(CHUNK_SIZE + 17)
    await backend.put("u/j/obj", "text/old", stream(old))
    halfway, release = asyncio.Event(), asyncio.Event()

    async def slow_new() -> AsyncIterator[bytes]:
        yield new[:1000]
        halfway.set()
        await release.wait()
        yield new[1000:]

    writer = asyncio.create_task(backend.put("u/j/obj", "text/new", slow_new()))
    await halfway.wait()
    # While the new version is half written, readers see the whole old one.
    info, body = await backend.open("u/j/obj")
    assert (await read_all(body))[0] == old
    assert (info.size, info.content_type) == (len(old), "text/old")
    release.set()
    written = await writer
    info, body = await backend.open("u/j/obj")
    assert (await read_all(body))[0] == new
    assert info.sha256 == written.sha256 == hashlib.sha256(new).hexdigest()
    assert info.content_type == "text/new"
    assert info.etag != hashlib.sha256(old).hexdigest()


async def test_a_write_once_put_never_replaces_an_object(backend: Backend) -> None:
    first = await backend.put("u/j/out.png", "image/png", stream(b"first"), if_absent=True)
    for data in (b"second", DATA):  # small (one commit) and streamed alike
        with pytest.raises(AlreadyExists):
            await backend.put("u/j/out.png", "image/png", stream(data), if_absent=True)
    info, body = await backend.open("u/j/out.png")
    assert (await read_all(body))[0] == b"first"
    assert (info.sha256, info.modified_at) == (first.sha256, first.modified_at)
    # A plain put still replaces it.
    await backend.put("u/j/out.png", "image/png", stream(b"third"))
    assert (await read_all((await backend.open("u/j/out.png"))[1]))[0] == b"third"


async def test_of_two_write_once_puts_exactly_one_wins(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The local folder only: on S3 a write-once put is a check before the upload (the minio
    # client sends no If-None-Match), so two writers racing within one upload may both store.
    backend = LocalBackend(tmp_path / "objects")
    results = await asyncio.gather(
        *(backend.put("u/j/race.png", "image/png", stream(bytes([n]) * 1000), if_absent=True)
          for n in range(4)),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1 and all(isinstance(r, AlreadyExists) for r in results if r not in won)
    info, body = await backend.open("u/j/race.png")
    assert info.sha256 == won[0].sha256 and len((await read_all(body))[0]) == 1000


async def test_failed_upload_leaves_the_old_object(backend: Backend) -> None:
    await backend.put("u/j/obj", "text/old", stream(b"old"))

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial new bytes"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await backend.put("u/j/obj", "text/new", broken())
    info, body = await backend.open("u/j/obj")
    assert (await read_all(body))[0] == b"old"
    assert info.content_type == "text/old"


@pytest.mark.parametrize("size", [10, CHUNK_SIZE + 10])  # local: small and streamed writes
async def test_put_cancelled_while_committing_stores_nothing(
    backend: Backend, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit runs in a thread, which a cancelled put cannot interrupt: it must still not
    store the object when it reaches its point of no return (a rename, the upload)."""
    await backend.put("u/j/obj", "text/old", stream(b"old"))
    # Hold the commit thread just before it commits: syncing the temp file, or uploading it.
    target, name = ((backend, "_finish_file") if isinstance(backend, LocalBackend)
                    else (backend.client, "put_object"))  # type: ignore[attr-defined]
    real = getattr(target, name)
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def held(*args: object, **kwargs: object) -> object:
        entered.set()
        release.wait(10)
        try:
            return real(*args, **kwargs)
        finally:
            finished.set()

    monkeypatch.setattr(target, name, held)
    for key in ("u/j/obj", "u/j/new"):
        entered.clear(), release.clear(), finished.clear()
        put = asyncio.create_task(backend.put(key, "text/new", stream(b"n" * size)))
        assert await asyncio.to_thread(entered.wait, 10)
        put.cancel()
        with pytest.raises(asyncio.CancelledError):
            await put
        release.set()
        assert await asyncio.to_thread(finished.wait, 10)
        await asyncio.sleep(0.1)  # the rest of the thread's work, if it went on to commit
    monkeypatch.undo()
    info, body = await backend.open("u/j/obj")
    assert ((await read_all(body))[0], info.content_type) == (b"old", "text/old")
    with pytest.raises(NotFound):
        await backend.stat("u/j/new")
    assert [o.key for o in (await backend.list("u/", 10))[0]] == ["u/j/obj"]
    if isinstance(backend, LocalBackend):
        assert list(backend.tmp.iterdir()) == []


async def test_exceeding_max_size_leaves_nothing(backend: Backend) -> None:
    with pytest.raises(TooLarge, match="'u/j/big' is larger than the limit of 1000000 bytes"):
        await backend.put("u/j/big", "", stream(DATA, UNEVEN), max_size=1_000_000)
    with pytest.raises(NotFound):
        await backend.stat("u/j/big")
    assert await backend.delete_prefix("u/") == 0
    # Exactly at the limit is allowed.
    info = await backend.put("u/j/exact", "", stream(DATA[:1000]), max_size=1000)
    assert info.size == 1000
    with pytest.raises(InvalidArgument, match="max_size"):
        await backend.put("u/j/neg", "", stream(b"x"), max_size=-1)


async def test_delete(backend: Backend) -> None:
    await backend.put("u/j/a", "", stream(b"a"))
    assert await backend.delete("u/j/a") is True
    with pytest.raises(NotFound):
        await backend.stat("u/j/a")
    assert await backend.delete("u/j/a") is False  # absent is not an error


async def test_delete_prefix_removes_exactly_that_prefix(backend: Backend) -> None:
    keep = ["u/j10/c", "u/j/x", "v/j1/a", "u/j1.png"]
    gone = ["u/j1/a", "u/j1/sub/b", "u/j1/sub/deeper/c"]
    for key in keep + gone:
        await backend.put(key, "", stream(key.encode()))
    assert await backend.delete_prefix("u/j1/") == 3
    for key in gone:
        with pytest.raises(NotFound):
            await backend.stat(key)
    for key in keep:
        _, body = await backend.open(key)
        assert (await read_all(body))[0] == key.encode()
    assert await backend.delete_prefix("u/j1/") == 0
    with pytest.raises(InvalidKey, match="must end with '/'"):
        await backend.delete_prefix("u/j")
    with pytest.raises(InvalidKey):
        await backend.delete_prefix("../")


async def test_list_pages_through_every_object_once(backend: Backend) -> None:
    keys = ["u/j1/a", "u/j1/sub/b", "u/j10/c", "u/j-x/d", "u/j/e", "v/j1/f", "u/j1.png"]
    for key in keys:
        await backend.put(key, "", stream(key.encode()))
    for page_size in (1, 2, 3, 100):
        seen, token, pages = [], "", 0
        while True:
            objects, token = await backend.list("", page_size, token)
            assert len(objects) <= page_size
            seen += [o.key for o in objects]
            pages += 1
            if not token:
                break
        assert sorted(seen) == sorted(keys) and len(seen) == len(set(seen)), (page_size, seen)
        assert pages == -(-len(keys) // page_size)  # no empty last page
    objects, token = await backend.list("u/j1/", 10)
    assert sorted(o.key for o in objects) == ["u/j1/a", "u/j1/sub/b"] and token == ""
    info = next(o for o in objects if o.key == "u/j1/a")
    assert info.size == len(b"u/j1/a") and info.modified_at > 0
    assert await backend.list("nobody/", 10) == ([], "")
    with pytest.raises(InvalidKey, match="must end with '/'"):
        await backend.list("u/j1", 10)
    with pytest.raises(InvalidKey):
        await backend.list("../", 10)
    with pytest.raises(InvalidKey, match="not under prefix"):
        await backend.list("u/j1/", 10, "v/j1/f")


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a\\b", "a\x00b", "..", "a/./b", ""], ids=repr)
async def test_hostile_keys_are_rejected_everywhere(backend: Backend, key: str) -> None:
    consumed = []

    async def chunks() -> AsyncIterator[bytes]:
        consumed.append(True)
        yield b"evil"

    with pytest.raises(InvalidKey, match=HOSTILE_KEYS.get(key, "'.'")):
        await backend.put(key, "", chunks())
    assert not consumed  # refused before reading a byte
    for call in (backend.stat(key), backend.open(key), backend.delete(key)):
        with pytest.raises(InvalidKey):
            await call


@pytest.mark.parametrize("content_type", ["text/plain\r\nX-Evil: 1", "image/\x00png", "x" * 256, "tÿpe/x"])
async def test_bad_content_types_are_refused(backend: Backend, content_type: str) -> None:
    with pytest.raises(InvalidArgument, match="printable ASCII"):
        await backend.put("u/j/f", content_type, stream(b"x"))
    with pytest.raises(NotFound):
        await backend.stat("u/j/f")
