"""What every storage backend promises: the Backend protocol, ObjectInfo, errors, and the
streaming helpers both backends share (spooling an upload to disk while hashing, reading a body
in chunks off the event loop)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TypeVar

from services.common.storage_client import CHUNK_SIZE  # the unit of every read and of gRPC messages

DEFAULT_CONTENT_TYPE = "application/octet-stream"
T = TypeVar("T")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str  # hex
    content_type: str
    etag: str  # strong validator, changes whenever the content does
    modified_at: float  # unix seconds of the last write


class StorageError(Exception):
    """Base of every error a backend raises on purpose; str() is a message for humans."""


class InvalidArgument(StorageError):
    pass


class InvalidKey(InvalidArgument):
    pass


class NotFound(StorageError):
    pass


class OutOfRange(StorageError):
    pass


class TooLarge(StorageError):
    pass


class BackendUnavailable(StorageError):
    pass


class AlreadyExists(StorageError):
    """A write-once put (if_absent) found an object under its key."""


class Abandoned(Exception):
    """Raised in a worker thread whose caller was cancelled, to stop before committing anything.
    Nobody sees it: the caller has already gone with CancelledError."""


class Body(Protocol):
    """An object's bytes: an async iterator of chunks (at most 1 MiB) that must be closed."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...
    async def __anext__(self) -> bytes: ...
    async def aclose(self) -> None: ...


class Backend(Protocol):
    async def put(
        self, key: str, content_type: str, chunks: AsyncIterator[bytes], max_size: int = 0,
        *, if_absent: bool = False,
    ) -> ObjectInfo:
        """Store chunks under key, replacing any object atomically. max_size 0 = no limit.
        `if_absent`: write once; AlreadyExists (and nothing changed) when the key has an object.

        If the caller is cancelled (a cancelled gRPC call), nothing is stored unless the commit
        itself (a rename, the final upload request) had already begun."""
        ...

    async def open(self, key: str, offset: int = 0, length: int = 0) -> tuple[ObjectInfo, Body]:
        """Info of the whole object and a body of `length` bytes from `offset` (0 = to the end)."""
        ...

    async def stat(self, key: str) -> ObjectInfo: ...

    async def delete(self, key: str) -> bool:
        """True when an object was removed; absent is not an error."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under prefix (ending with '/'); return how many."""
        ...

    async def list(self, prefix: str, page_size: int, page_token: str = "") -> tuple[list[ObjectInfo], str]:
        """Up to page_size objects under prefix after page_token, in a stable order, and the token
        of the next page ("" when there is none). Listed infos carry key, size and modified_at."""
        ...

    async def ready(self) -> str | None:
        """None when the backend can serve, else what is wrong (for the health status)."""
        ...

    async def close(self) -> None: ...


def byte_range(key: str, size: int, offset: int, length: int) -> tuple[int, int]:
    """Check a requested range against an object's size; return (offset, length) to send."""
    if offset < 0 or length < 0:
        raise InvalidArgument(f"offset and length must not be negative (got {offset}, {length})")
    if offset > size:
        raise OutOfRange(f"offset {offset} is beyond the end of {key!r} ({size} bytes)")
    remaining = size - offset
    return offset, remaining if length == 0 else min(length, remaining)


async def spool(
    key: str, chunks: AsyncIterator[bytes], file: BinaryIO, max_size: int
) -> tuple[int, str]:
    """Write chunks to `file` while hashing; return (size, sha256 hex).

    Small chunks are batched so each thread hop writes about 1 MiB; at most that much is held
    in memory. Raises TooLarge as soon as more than max_size bytes arrived (0 = no limit)."""
    if max_size < 0:
        raise InvalidArgument(f"max_size must not be negative (got {max_size})")
    digest = hashlib.sha256()
    size = 0
    batch: list[bytes] = []
    batched = 0

    def flush(parts: list[bytes]) -> None:
        for part in parts:
            digest.update(part)  # hashlib releases the GIL for large buffers
            file.write(part)

    async for chunk in chunks:
        size += len(chunk)
        if max_size and size > max_size:
            raise TooLarge(f"object {key!r} is larger than the limit of {max_size} bytes")
        batch.append(chunk)
        batched += len(chunk)
        if batched >= CHUNK_SIZE:
            await asyncio.to_thread(flush, batch)
            batch, batched = [], 0
    await asyncio.to_thread(flush, batch)
    return size, digest.hexdigest()


async def run_abandonable(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking `fn(abandoned, *args, **kwargs)` in a thread; `abandoned` is a threading.Event
    set when the awaiting task is cancelled. With asyncio.to_thread a cancelled caller leaves its
    thread running unseen, so an upload would still be committed after its call was cancelled;
    here fn checks `abandoned` right before its point of no return (raising Abandoned) and always
    runs to the end, so it can clean up what it made."""
    abandoned = threading.Event()
    work = asyncio.get_running_loop().run_in_executor(  # in the caller's context, as to_thread
        None, functools.partial(contextvars.copy_context().run, fn, abandoned, *args, **kwargs))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        abandoned.set()
        work.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved: no log
        raise


class ChunkReader:
    """A Body over a blocking `read(n)`: each read runs in a thread, so the event loop never
    waits on disk or network; `close` releases the file or HTTP response."""

    def __init__(self, read: Callable[[int], bytes], close: Callable[[], None], length: int,
                 on_error: Callable[[Exception], StorageError] | None = None) -> None:
        self._read = read
        self._close = close
        self._remaining = length
        self._on_error = on_error
        self._closed = False

    def __aiter__(self) -> ChunkReader:
        return self

    async def __anext__(self) -> bytes:
        if self._remaining <= 0 or self._closed:
            await self.aclose()
            raise StopAsyncIteration
        try:
            chunk = await asyncio.to_thread(self._read, min(CHUNK_SIZE, self._remaining))
        except Exception as exc:
            await self.aclose()
            if self._on_error is None:
                raise
            raise self._on_error(exc) from exc
        if not chunk:
            await self.aclose()
            raise BackendUnavailable(f"object ended {self._remaining} bytes early while reading")
        self._remaining -= len(chunk)
        return chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._close)
