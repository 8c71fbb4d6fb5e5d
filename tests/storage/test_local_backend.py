"""What only the local folder backend does: its on-disk layout, crash repair and folder pruning."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.config import Settings
from services.storage.backends import (
    CHUNK_SIZE,
    InvalidKey,
    LocalBackend,
    NotFound,
    S3Backend,
    backend_from_url,
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
    with pytest.raises(InvalidKey, match="too long"):
        await store.put("u/" + "n" * 300, "", stream(b"x"))
    with pytest.raises(NotFound):
        await store.stat("u/j/none")


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
