"""What only the local folder backend does: its on-disk layout, crash repair and folder pruning."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.config import Settings
from services.storage.backends import (
    CHUNK_SIZE,
    BackendUnavailable,
    InvalidKey,
    LocalBackend,
    NotFound,
    S3Backend,
    StorageError,
    backend_from_url,
    local,
)

from .helpers import read_all, stream


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


async def test_layout_keeps_data_and_metadata_apart(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path)
    # "a/b.json" must not collide with the metadata of "a/b".
    await store.put("a/b", "text/plain", stream(b"bytes of a/b"))
    await store.put("a/b.json", "application/json", stream(b"{}"))
    assert files_under(tmp_path / "data") == ["a/b", "a/b.json"]
    assert sorted(files_under(tmp_path / "meta")) == ["a/b.json", "a/b.json.json"]
    meta = json.loads((tmp_path / "meta/a/b.json").read_text())
    assert meta["size"] == 12 and meta["content_type"] == "text/plain"
    assert meta["sha256"] == hashlib.sha256(b"bytes of a/b").hexdigest()
    assert (await store.stat("a/b.json")).content_type == "application/json"
    assert files_under(tmp_path / "tmp") == []  # no temp file survives a put


async def test_failed_and_oversized_puts_leave_no_temp_files(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path)

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 10
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await store.put("u/j/f", "", broken())
    with pytest.raises(Exception, match="larger than"):
        await store.put("u/j/f", "", stream(b"y" * 100), max_size=50)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("size", [0, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 5])
async def test_small_and_streamed_puts_store_the_same_way(tmp_path: Path, size: int) -> None:
    # Up to CHUNK_SIZE a put is written in one thread hop; beyond it, streamed: same result.
    store = LocalBackend(tmp_path)
    data = os.urandom(size)
    pieces = [data[i:i + 70_000] for i in range(0, size, 70_000)]

    async def chunks() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    info = await store.put("u/j/f", "image/png", chunks())
    assert (info.size, info.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert (tmp_path / "data/u/j/f").read_bytes() == data
    assert (await store.stat("u/j/f")).sha256 == info.sha256
    assert files_under(tmp_path / "tmp") == []
    if size:
        with pytest.raises(Exception, match="larger than"):
            await store.put("u/j/g", "", chunks(), max_size=size - 1)
    assert files_under(tmp_path / "tmp") == [] and not (tmp_path / "data/u/j/g").exists()


async def test_metadata_lost_in_a_crash_is_rebuilt_from_the_data(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path)
    await store.put("u/j/f", "image/png", stream(b"old"))
    meta_path = tmp_path / "meta/u/j/f.json"
    stale_meta = meta_path.read_text()
    await store.put("u/j/f", "image/png", stream(b"new content"))
    # A crash between the data rename and the metadata rename: new data, old metadata.
    meta_path.write_text(stale_meta)
    info = await store.stat("u/j/f")
    assert (info.size, info.sha256) == (11, hashlib.sha256(b"new content").hexdigest())
    assert info.content_type == "image/png"
    # ...and with no metadata at all.
    meta_path.unlink()
    info, body = await store.open("u/j/f")
    assert (await read_all(body))[0] == b"new content"
    assert info.sha256 == hashlib.sha256(b"new content").hexdigest()
    assert json.loads(meta_path.read_text())["sha256"] == info.sha256


async def test_readers_never_mix_versions_during_concurrent_overwrites(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path, fsync=False)
    versions = [os.urandom(300_000 + i) for i in range(2)]
    await store.put("u/j/f", "", stream(versions[0]))

    async def writer() -> None:
        for i in range(30):
            await store.put("u/j/f", "", stream(versions[i % 2], (70_000,)))

    async def reader() -> int:
        reads = 0
        while not done.is_set():
            info, body = await store.open("u/j/f")
            data, _ = await read_all(body)
            assert len(data) == info.size
            assert hashlib.sha256(data).hexdigest() == info.sha256
            reads += 1
        return reads

    done = asyncio.Event()
    readers = [asyncio.create_task(reader()) for _ in range(3)]
    await writer()
    done.set()
    assert sum(await asyncio.gather(*readers)) > 0


async def test_deletes_prune_empty_folders_only(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path)
    for key in ("alice/j1/a", "alice/j1/sub/b", "alice/j2/c"):
        await store.put(key, "", stream(b"x"))
    assert await store.delete_prefix("alice/j1/") == 2
    assert not (tmp_path / "data/alice/j1").exists()
    assert not (tmp_path / "meta/alice/j1").exists()
    assert (tmp_path / "data/alice/j2/c").exists()
    assert await store.delete("alice/j2/c")
    assert list((tmp_path / "data").iterdir()) == []
    assert list((tmp_path / "meta").iterdir()) == []


async def test_key_that_needs_a_file_to_be_a_folder_is_refused_clearly(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path)
    await store.put("u/j/a", "", stream(b"file"))
    with pytest.raises(InvalidKey, match="clashes with an existing object"):
        await store.put("u/j/a/b", "", stream(b"nested"))
    assert (await store.stat("u/j/a")).size == 4
    assert files_under(tmp_path / "tmp") == []


async def test_overlong_segment_is_an_invalid_key(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path)
    # The last segment also names the metadata file, "<segment>.json": 250 bytes at most.
    for key in ("u/" + "n" * 300, "u/j/" + "n" * 251, "u/j/" + "é" * 126, "u/" + "d" * 256 + "/f"):
        with pytest.raises(InvalidKey, match="too long"):
            await store.put(key, "", stream(b"x"))
    assert files_under(tmp_path) == []  # refused before anything was written
    assert await store.list("", 10) == ([], "")
    for key in ("u/j/" + "n" * 250, "u/" + "d" * 255 + "/f"):
        await store.put(key, "text/plain", stream(b"fits"))
        assert (await store.stat(key)).size == 4
    with pytest.raises(NotFound):
        await store.stat("u/j/none")


async def test_orphan_data_with_an_overlong_name_can_be_deleted(tmp_path: Path) -> None:
    # Left by a put from before the limit: data saved, metadata name too long to exist.
    store = LocalBackend(tmp_path)
    await store.put("u/j/other", "", stream(b"o"))
    orphan = tmp_path / "data/u/j" / ("n" * 252)
    orphan.write_bytes(b"x")
    assert await store.delete("u/j/" + "n" * 252) is True
    assert files_under(tmp_path / "data") == ["u/j/other"]


@pytest.mark.parametrize(("first", "second"), [("q/r/x", "q/r/x.json/y"), ("q/r/x.json/y", "q/r/x")])
async def test_keys_whose_metadata_would_clash_are_refused_whole(tmp_path: Path, first: str,
                                                               second: str) -> None:
    # The metadata of "q/r/x" is meta/q/r/x.json, a folder for the metadata of "q/r/x.json/y".
    store = LocalBackend(tmp_path)
    await store.put(first, "text/plain", stream(b"first"))
    for data in (b"second", b"s" * (CHUNK_SIZE + 1)):
        with pytest.raises(InvalidKey, match="clashes with an existing object"):
            await store.put(second, "", stream(data))
    with pytest.raises(NotFound):
        await store.stat(second)
    assert [o.key for o in (await store.list("", 10))[0]] == [first]
    assert files_under(tmp_path / "data") == [first]
    assert (await store.stat(first)).size == 5
    assert files_under(tmp_path / "tmp") == []
    empty = [p for p in tmp_path.glob("*/**/*") if p.is_dir() and not any(p.iterdir())]
    assert empty == []  # no folder made for the refused key stays behind


async def test_a_failed_metadata_step_undoes_the_data_rename(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBackend(tmp_path)
    await store.put("u/j/obj", "text/old", stream(b"old"))
    real_place = local._place

    def metadata_fails(src: Path | None, dst: Path, key: str) -> None:
        if src is not None and dst.suffix == ".json":
            raise OSError(errno.EIO, "Input/output error")
        real_place(src, dst, key)

    monkeypatch.setattr(local, "_place", metadata_fails)
    for key in ("u/j/obj", "u/j/new", "v/w/new"):
        with pytest.raises(BackendUnavailable, match="Input/output error"):
            await store.put(key, "text/new", stream(b"new bytes"))
    monkeypatch.undo()
    info, body = await store.open("u/j/obj")  # the old object, with its own metadata
    assert ((await read_all(body))[0], info.content_type) == (b"old", "text/old")
    assert files_under(tmp_path / "data") == ["u/j/obj"]
    assert files_under(tmp_path / "meta") == ["u/j/obj.json"]
    assert not (tmp_path / "data/v").exists() and not (tmp_path / "meta/v").exists()
    assert files_under(tmp_path / "tmp") == []


async def test_a_failed_metadata_repair_leaves_no_temp_file(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path)
    await store.put("u/j/f", "", stream(b"data"))
    meta_folder = tmp_path / "meta/u/j"
    (meta_folder / "f.json").unlink()
    meta_folder.rmdir()
    meta_folder.write_text("a file where the metadata folder should be")
    with pytest.raises(StorageError):
        await store.stat("u/j/f")
    assert files_under(tmp_path / "tmp") == []


def test_backend_from_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = backend_from_url(Settings(storage_url="file://var/objects"))
    assert isinstance(relative, LocalBackend) and relative.root == tmp_path / "var/objects"
    absolute = backend_from_url(Settings(storage_url=f"file://{tmp_path}/abs"))
    assert isinstance(absolute, LocalBackend) and absolute.root == tmp_path / "abs"
    default = backend_from_url(Settings(data_dir=str(tmp_path / "d")))
    assert isinstance(default, LocalBackend) and default.root == tmp_path / "d/objects"
    assert default.fsync  # durable by default; RADIOLOGY_STORAGE_FSYNC=false turns it off
    monkeypatch.setenv("RADIOLOGY_STORAGE_FSYNC", "false")
    assert not backend_from_url(Settings(storage_url=f"file://{tmp_path}/abs")).fsync  # type: ignore[union-attr]
    s3 = backend_from_url(Settings(storage_url="s3://minio:9000/radiology", s3_access_key="k",
                                   s3_secret_key="s"))
    assert isinstance(s3, S3Backend) and s3.bucket == "radiology"
    for bad in ("ftp://x/y", "s3://minio:9000", "s3://minio:9000/a/b", "file://", "var/objects"):
        with pytest.raises(ValueError, match="storage URL"):
            backend_from_url(Settings(storage_url=bad))
    with pytest.raises(ValueError, match="bucket name"):
        backend_from_url(Settings(storage_url="s3://minio:9000/x"))
