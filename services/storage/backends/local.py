"""LocalBackend: objects as files under root/data/<key>, metadata under root/meta/<key>.json.

Writes go to a temp file under root/tmp (same filesystem, outside the data tree so a temp file
can never be mistaken for an object) and are moved into place with os.replace: readers see the
old object or the new one, never half of one. The metadata records the data file's inode, so a
reader can tell whether the metadata it read belongs to the data file it opened.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from services.storage.backends.base import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    Abandoned,
    AlreadyExists,
    BackendUnavailable,
    Body,
    ChunkReader,
    InvalidArgument,
    InvalidKey,
    NotFound,
    ObjectInfo,
    StorageError,
    TooLarge,
    byte_range,
    run_abandonable,
    spool,
)
from services.storage.backends.keys import (
    validate_content_type,
    validate_key,
    validate_list_args,
    validate_prefix,
)

# A reader that sees data and metadata of different writes (a writer between its two renames)
# retries this many times before concluding a crash left them apart, and repairing the metadata.
_CONSISTENCY_RETRIES = 5
_STALE_TEMP_SECONDS = 3600
_NAME_MAX = 255  # bytes in one file name, on about every filesystem


class LocalBackend:
    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.data = self.root / "data"
        self.meta = self.root / "meta"
        self.tmp = self.root / "tmp"
        self.fsync = fsync  # durability of the bytes before they become visible
        for folder in (self.data, self.meta, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps()

    # --- paths -------------------------------------------------------------------------------
    def _data_path(self, key: str) -> Path:
        return self.data / validate_key(key)

    def _meta_path(self, key: str) -> Path:
        return self.meta / (validate_key(key) + ".json")

    # --- write -------------------------------------------------------------------------------
    async def put(
        self, key: str, content_type: str, chunks: AsyncIterator[bytes], max_size: int = 0,
        *, if_absent: bool = False,
    ) -> ObjectInfo:
        data_path, meta_path = self._data_path(key), self._meta_path(key)
        if if_absent and await self._io(data_path.is_file):  # early: no upload to throw away
            raise _exists(key)
        _check_segment_lengths(key)
        content_type = validate_content_type(content_type)
        if max_size < 0:
            raise InvalidArgument(f"max_size must not be negative (got {max_size})")
        # Most objects are small (outputs, previews): buffer up to CHUNK_SIZE and, if the stream
        # ends there, write, sync and commit in one thread hop instead of four.
        head: list[bytes] = []
        size = 0
        stream = aiter(chunks)
        async for chunk in stream:
            size += len(chunk)
            if max_size and size > max_size:
                raise TooLarge(f"object {key!r} is larger than the limit of {max_size} bytes")
            head.append(chunk)
            if size > CHUNK_SIZE:
                return await self._put_streamed(key, content_type, _chain(head, stream), max_size,
                                                data_path, meta_path, if_absent)
        return await self._io(self._put_small, key, content_type, b"".join(head), data_path,
                              meta_path, if_absent, abandonable=True)

    def _put_small(self, abandoned: threading.Event, key: str, content_type: str, data: bytes,
                   data_path: Path, meta_path: Path, if_absent: bool) -> ObjectInfo:
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="put-")
        file = os.fdopen(fd, "wb")
        try:
            file.write(data)
        except BaseException:
            _discard(file, tmp_name)
            raise
        return self._store(abandoned, file, Path(tmp_name), len(data),
                           hashlib.sha256(data).hexdigest(), content_type, key, data_path, meta_path,
                           if_absent)

    async def _put_streamed(self, key: str, content_type: str, chunks: AsyncIterator[bytes],
                            max_size: int, data_path: Path, meta_path: Path,
                            if_absent: bool) -> ObjectInfo:
        fd, tmp_name = await self._io(tempfile.mkstemp, dir=self.tmp, prefix="put-")
        file = os.fdopen(fd, "wb")
        try:
            size, sha256 = await spool(key, chunks, file, max_size)
        except BaseException:
            _discard(file, tmp_name)
            raise
        # From here the thread owns the temp file: even if this put is cancelled it runs to the
        # end, removing the file instead of committing it.
        return await self._io(self._store, file, Path(tmp_name), size, sha256, content_type, key,
                              data_path, meta_path, if_absent, abandonable=True)

    def _store(self, abandoned: threading.Event, file: Any, tmp_data: Path, size: int, sha256: str,
               content_type: str, key: str, data_path: Path, meta_path: Path,
               if_absent: bool = False) -> ObjectInfo:
        """Sync and close the written temp file, then commit it; no temp file outlives this."""
        tmp_meta = tmp_data.with_suffix(".json")
        try:
            with file:
                self._finish_file(file)
                inode = os.fstat(file.fileno()).st_ino
            meta = {"size": size, "sha256": sha256, "content_type": content_type,
                    "etag": sha256, "modified_at": time.time(), "inode": inode}
            if if_absent:
                self._commit_once(abandoned, tmp_data, tmp_meta, meta, data_path, meta_path, key)
            else:
                self._commit(abandoned, tmp_data, tmp_meta, meta, data_path, meta_path, key)
        finally:
            for leftover in (tmp_data, tmp_meta):  # gone after a commit; removed after a failure
                leftover.unlink(missing_ok=True)
        return _info(key, meta)

    def _finish_file(self, file: Any) -> None:
        file.flush()
        if self.fsync:
            os.fsync(file.fileno())

    def _commit(self, abandoned: threading.Event, tmp_data: Path, tmp_meta: Path,
                meta: dict[str, Any], data_path: Path, meta_path: Path, key: str) -> None:
        """Move data, then metadata, into place: all or nothing. Data first: a reader that sees
        new data with old metadata notices the inode mismatch and waits for the metadata."""
        tmp_meta.write_text(json.dumps(meta))
        link, backup = tmp_data.with_suffix(".old"), None
        try:
            # The metadata tree must take this key before the data moves in: "q/r/x" has
            # q/r/x.json there, which "q/r/x.json/y" would need as a folder, and the other way round.
            _place(None, meta_path, key)
            if meta_path.is_dir():
                raise _clash(key)
            try:  # keep the previous object by a hard link, so the data rename can be undone
                os.link(data_path, link)
                backup, new_key = link, False
            except OSError as exc:
                new_key = isinstance(exc, FileNotFoundError)
            if abandoned.is_set():  # the put was cancelled: its caller has gone
                raise Abandoned(f"put of {key!r} cancelled")
            _place(tmp_data, data_path, key)
            try:
                _place(tmp_meta, meta_path, key)
            except BaseException:
                if _inode(data_path) == meta["inode"]:  # else a newer put has replaced ours
                    if backup is not None:
                        os.replace(backup, data_path)
                    elif new_key:
                        data_path.unlink()
                raise
        except BaseException:
            # Folders made for this put alone go with it: an empty data/a/b/ would refuse "a/b".
            _prune_empty_parents(data_path.parent, self.data)
            _prune_empty_parents(meta_path.parent, self.meta)
            raise
        finally:
            link.unlink(missing_ok=True)

    def _commit_once(self, abandoned: threading.Event, tmp_data: Path, tmp_meta: Path,
                     meta: dict[str, Any], data_path: Path, meta_path: Path, key: str) -> None:
        """Link the data into place only if the key has no object (link fails on an existing name:
        atomic, so of two writers exactly one wins), then its metadata."""
        tmp_meta.write_text(json.dumps(meta))
        try:
            _place(None, meta_path, key)
            if meta_path.is_dir():
                raise _clash(key)
            if abandoned.is_set():
                raise Abandoned(f"put of {key!r} cancelled")
            _place(None, data_path, key)  # its folders
            try:
                os.link(tmp_data, data_path)
            except FileExistsError:
                raise (_clash(key) if data_path.is_dir() else _exists(key)) from None
            try:
                _place(tmp_meta, meta_path, key)
            except BaseException:
                data_path.unlink()
                raise
        except BaseException as exc:
            if not isinstance(exc, AlreadyExists):
                _prune_empty_parents(data_path.parent, self.data)
                _prune_empty_parents(meta_path.parent, self.meta)
            raise

    # --- read --------------------------------------------------------------------------------
    async def stat(self, key: str) -> ObjectInfo:
        file, meta = await self._io(self._open_consistent, key)
        file.close()
        return _info(key, meta)

    async def open(self, key: str, offset: int = 0, length: int = 0) -> tuple[ObjectInfo, Body]:
        file, meta = await self._io(self._open_consistent, key)
        try:
            offset, length = byte_range(key, meta["size"], offset, length)
            file.seek(offset)
        except BaseException:
            file.close()
            raise
        return _info(key, meta), ChunkReader(file.read, file.close, length, _os_error)

    def _open_consistent(self, key: str) -> tuple[Any, dict[str, Any]]:
        """The open data file and the metadata written with it."""
        data_path, meta_path = self._data_path(key), self._meta_path(key)
        for _ in range(_CONSISTENCY_RETRIES):
            file = _open_data(data_path, key)
            inode = os.fstat(file.fileno()).st_ino
            meta = _read_meta(meta_path)
            if meta is not None and meta.get("inode") == inode:
                return file, meta
            file.close()
            time.sleep(0.01)
        file = _open_data(data_path, key)
        try:
            return file, self._repair_meta(file, data_path, meta_path)
        except BaseException:
            file.close()
            raise

    def _repair_meta(self, file: Any, data_path: Path, meta_path: Path) -> dict[str, Any]:
        """Metadata that never matches the data means a crash between the two renames of a put
        (or a lost metadata file): rebuild it from the data."""
        old = _read_meta(meta_path)
        st = os.fstat(file.fileno())
        if old is not None and old.get("inode") == st.st_ino:
            return old  # the writer was only slow
        digest = hashlib.sha256()
        while block := file.read(CHUNK_SIZE):
            digest.update(block)
        file.seek(0)
        meta = {"size": st.st_size, "sha256": digest.hexdigest(),
                "content_type": (old or {}).get("content_type", DEFAULT_CONTENT_TYPE),
                "etag": digest.hexdigest(), "modified_at": st.st_mtime, "inode": st.st_ino}
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="meta-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(meta, out)
            if os.stat(data_path).st_ino == st.st_ino:  # else a newer put owns the metadata now
                meta_path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, meta_path)
        finally:
            Path(tmp).unlink(missing_ok=True)  # gone after the rename; removed otherwise
        return meta

    # --- delete ------------------------------------------------------------------------------
    async def delete(self, key: str) -> bool:
        return await self._io(self._delete, self._data_path(key), self._meta_path(key))

    def _delete(self, data_path: Path, meta_path: Path) -> bool:
        # Data first: an object exists exactly when its data file does.
        try:
            data_path.unlink()
            removed = True
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            removed = False
        try:
            meta_path.unlink(missing_ok=True)
        except OSError as exc:  # data orphaned by a put from before the segment limit
            if exc.errno != errno.ENAMETOOLONG:
                raise
        _prune_empty_parents(data_path.parent, self.data)
        _prune_empty_parents(meta_path.parent, self.meta)
        return removed

    async def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        return await self._io(self._delete_tree, prefix)

    def _delete_tree(self, prefix: str) -> int:
        deleted = _remove_tree(self.data / prefix)
        _remove_tree(self.meta / prefix)
        _prune_empty_parents((self.data / prefix).parent, self.data)
        _prune_empty_parents((self.meta / prefix).parent, self.meta)
        return deleted

    async def list(self, prefix: str, page_size: int, page_token: str = "") -> tuple[list[ObjectInfo], str]:
        validate_list_args(prefix, page_token)
        found = await self._io(self._list, prefix, page_size + 1, page_token)
        if len(found) > page_size:
            return found[:page_size], found[page_size - 1].key
        return found, ""

    def _list(self, prefix: str, limit: int, page_token: str) -> list[ObjectInfo]:
        """Keys in the order of their segments (a depth-first walk of sorted folder entries),
        which is the order the page token is compared in: whole subtrees before it are skipped."""
        after = tuple(page_token.split("/")) if page_token else ()
        found: list[ObjectInfo] = []

        def walk(folder: Path, parts: tuple[str, ...]) -> bool:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                return False
            for entry in entries:
                here = (*parts, entry.name)
                if entry.is_dir(follow_symlinks=False):
                    if here < after[: len(here)]:
                        continue
                    if walk(Path(entry.path), here):
                        return True
                elif entry.is_file(follow_symlinks=False) and here > after:
                    st = entry.stat(follow_symlinks=False)
                    found.append(ObjectInfo("/".join(here), st.st_size, "", "", "", st.st_mtime))
                    if len(found) >= limit:
                        return True
            return False

        start = tuple(prefix.rstrip("/").split("/")) if prefix else ()
        walk(self.data.joinpath(*start), start)
        return found

    async def ready(self) -> str | None:
        writable = await asyncio.to_thread(
            lambda: all(os.access(d, os.W_OK | os.X_OK) for d in (self.data, self.meta, self.tmp))
        )
        return None if writable else f"the storage folder {self.root} is missing or not writable"

    async def close(self) -> None:
        return None

    # --- helpers -----------------------------------------------------------------------------
    async def _io(self, fn: Any, *args: Any, abandonable: bool = False, **kwargs: Any) -> Any:
        """Blocking file work in a thread; OS failures become clear storage errors. An
        abandonable fn takes an `abandoned` event first (see run_abandonable)."""
        try:
            if abandonable:
                return await run_abandonable(fn, *args, **kwargs)
            return await asyncio.to_thread(fn, *args, **kwargs)
        except OSError as exc:
            raise _os_error(exc) from exc

    def _remove_stale_temps(self) -> None:
        # Left by a crash mid-upload; old ones only, another process may share this root.
        cutoff = time.time() - _STALE_TEMP_SECONDS
        for entry in self.tmp.iterdir():
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
            except OSError:
                pass


def _check_segment_lengths(key: str) -> None:
    """Refuse up front what the filesystem would refuse halfway through a put: a name longer
    than NAME_MAX, counting the ".json" the last segment gets as a metadata file name."""
    *folders, name = key.split("/")
    if (any(len(s.encode()) > _NAME_MAX for s in folders)
            or len(name.encode()) > _NAME_MAX - len(".json")):
        raise InvalidKey(f"a segment of the key is too long for the local filesystem (max "
                         f"{_NAME_MAX} bytes, {_NAME_MAX - len('.json')} for the last)")


def _exists(key: str) -> AlreadyExists:
    return AlreadyExists(f"object {key!r} exists and is written once")


def _place(src: Path | None, dst: Path, key: str) -> None:
    """Create dst's folders and move src (if any) to dst."""
    for attempt in range(3):  # a concurrent delete may prune the fresh parent folder
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src is not None:
                os.replace(src, dst)
            return
        except FileNotFoundError:
            if attempt == 2:
                raise
        except (NotADirectoryError, IsADirectoryError, FileExistsError):
            raise _clash(key) from None


def _clash(key: str) -> InvalidKey:
    return InvalidKey(f"key {key!r} clashes with an existing object: one of them would have to "
                      "be both a file and a folder")


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _discard(file: Any, tmp_name: str) -> None:
    file.close()
    os.unlink(tmp_name)


async def _chain(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk


def _info(key: str, meta: dict[str, Any]) -> ObjectInfo:
    return ObjectInfo(key=key, size=meta["size"], sha256=meta["sha256"],
                      content_type=meta["content_type"], etag=meta["etag"],
                      modified_at=meta["modified_at"])


def _open_data(path: Path, key: str) -> Any:
    try:
        return open(path, "rb")  # noqa: SIM115 - handed over to a ChunkReader
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound(f"object {key!r} not found") from None


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _remove_tree(top: Path) -> int:
    """Remove every file under top and then the emptied folders; return the files removed."""
    removed = 0
    for folder, dirs, files in os.walk(top, topdown=False):
        for name in files:
            try:
                os.unlink(os.path.join(folder, name))
                removed += 1
            except FileNotFoundError:
                pass
        for name in dirs:
            _rmdir_if_empty(Path(folder, name))
    _rmdir_if_empty(top)
    return removed


def _prune_empty_parents(folder: Path, stop: Path) -> None:
    while folder != stop and stop in folder.parents and _rmdir_if_empty(folder):
        folder = folder.parent


def _rmdir_if_empty(folder: Path) -> bool:
    try:
        folder.rmdir()
        return True
    except OSError:  # not empty (a concurrent put), already gone, or a file
        return False


def _os_error(exc: Exception) -> StorageError:
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        return InvalidKey("a segment of the key is too long for the local filesystem (max 255 bytes)")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return BackendUnavailable("local storage is full")
    return BackendUnavailable(f"local storage failed: {exc.strerror or exc}")
