"""S3Backend: objects in a bucket of any S3/MinIO-compatible server, through the `minio` client.

minio is synchronous, so every call runs in a thread. Uploads are spooled to a temporary file
while hashing (the SHA-256 goes into the object's metadata and the size limit is enforced before
anything reaches the bucket); fput_object then uploads it, in parts when it is large.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.datatypes import Object
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.helpers import check_bucket_name

from services.storage.backends.base import (
    DEFAULT_CONTENT_TYPE,
    Abandoned,
    AlreadyExists,
    BackendUnavailable,
    Body,
    ChunkReader,
    NotFound,
    ObjectInfo,
    StorageError,
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

T = TypeVar("T")
_SHA_META = "sha256"  # stored as x-amz-meta-sha256
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"}
_CHANGED_CODES = {"PreconditionFailed"}
_OPEN_ATTEMPTS = 3


class S3Backend:
    def __init__(self, endpoint: str, bucket: str, access_key: str, secret_key: str,
                 region: str = "us-east-1", secure: bool = False,
                 spool_dir: str | None = None) -> None:
        check_bucket_name(bucket)  # ValueError at start-up rather than on every call
        self.bucket = bucket
        self.spool_dir = spool_dir
        # minio's default waits 5 minutes to connect; an unreachable server must fail fast.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60),
            maxsize=16,
            retries=urllib3.Retry(total=2, backoff_factor=0.2,
                                  status_forcelist=[500, 502, 503, 504]),
        )
        self.client = Minio(endpoint, access_key=access_key or None, secret_key=secret_key or None,
                            region=region or None, secure=secure, http_client=http)
        self._endpoint = endpoint
        self._bucket_ready = False
        self._bucket_lock = asyncio.Lock()

    # --- write -------------------------------------------------------------------------------
    async def put(
        self, key: str, content_type: str, chunks: AsyncIterator[bytes], max_size: int = 0,
        *, if_absent: bool = False,
    ) -> ObjectInfo:
        validate_key(key)
        content_type = validate_content_type(content_type)
        await self._ensure_bucket()
        if if_absent:
            await self._refuse_existing(key)
        fd, path = await asyncio.to_thread(tempfile.mkstemp, dir=self.spool_dir, prefix="s3put-")
        try:
            with os.fdopen(fd, "wb") as file:
                _, sha256 = await spool(key, chunks, file, max_size)
            if if_absent:  # checked again after the spool, just before the upload
                await self._refuse_existing(key)
            await self._call(self._upload, key, path, content_type, sha256, abandonable=True)
        finally:
            os.unlink(path)  # an abandoned upload still reading it keeps its open file
        # Stat for the server's own view (ETag, Last-Modified) of what was just written.
        return await self.stat(key)

    async def _refuse_existing(self, key: str) -> None:
        """AlreadyExists when the key has an object. The minio client sends no If-None-Match, so
        this is a check before the upload, not part of it."""
        try:
            await self.stat(key)
        except NotFound:
            return
        raise AlreadyExists(f"object {key!r} exists and is written once")

    def _upload(self, abandoned: threading.Event, key: str, path: str, content_type: str,
                sha256: str) -> None:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            # minio reads each part just before sending it (the whole object when it is small):
            # a cancelled put stops there, and minio aborts a multipart upload, storing nothing.
            self.client.put_object(self.bucket, key, _Abandonable(file, abandoned), size,
                                   content_type=content_type, metadata={_SHA_META: sha256})

    # --- read --------------------------------------------------------------------------------
    async def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        return _info(key, await self._call(self.client.stat_object, self.bucket, key, key=key))

    async def open(self, key: str, offset: int = 0, length: int = 0) -> tuple[ObjectInfo, Body]:
        validate_key(key)
        for _ in range(_OPEN_ATTEMPTS):
            stat = await self._call(self.client.stat_object, self.bucket, key, key=key)
            info = _info(key, stat)
            offset, length = byte_range(key, info.size, offset, length)
            if length == 0:  # S3 refuses an empty range; nothing to fetch anyway
                return info, ChunkReader(lambda n: b"", lambda: None, 0)
            try:
                # If-Match pins the body to the version whose info we return.
                response = await self._call(
                    self.client.get_object, self.bucket, key, offset=offset, length=length,
                    request_headers={"If-Match": f'"{stat.etag}"'}, key=key, changed_ok=True)
            except _Changed:
                continue  # replaced between stat and get: take the new version
            return info, ChunkReader(response.read, lambda r=response: _release(r), length,
                                     lambda exc: _translate(exc, key, self._endpoint))
        raise BackendUnavailable(f"object {key!r} keeps changing while being opened; try again")

    # --- delete ------------------------------------------------------------------------------
    async def delete(self, key: str) -> bool:
        validate_key(key)
        try:
            await self.stat(key)
        except NotFound:
            return False
        await self._call(self.client.remove_object, self.bucket, key, key=key)
        return True

    async def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        return await self._call(self._delete_prefix_sync, prefix)

    def _delete_prefix_sync(self, prefix: str) -> int:
        names = [obj.object_name for obj in
                 self.client.list_objects(self.bucket, prefix=prefix, recursive=True)]
        # remove_objects is lazy: errors only come out (and requests only go) when iterated.
        errors = list(self.client.remove_objects(self.bucket, (DeleteObject(n) for n in names)))
        if errors:
            raise BackendUnavailable(
                f"could not remove {len(errors)} of {len(names)} objects under {prefix!r}: "
                f"{errors[0].message}")
        return len(names)

    async def list(self, prefix: str, page_size: int, page_token: str = "") -> tuple[list[ObjectInfo], str]:
        validate_list_args(prefix, page_token)
        await self._ensure_bucket()

        def page() -> list[ObjectInfo]:
            found = []
            listing = self.client.list_objects(
                self.bucket, prefix=prefix or None, recursive=True, start_after=page_token or None
            )
            for obj in listing:  # S3 order: UTF-8 bytes of the key; minio pages through for us
                modified = obj.last_modified.timestamp() if obj.last_modified else 0.0
                found.append(ObjectInfo(obj.object_name, obj.size or 0, "", "",
                                        (obj.etag or "").strip('"'), modified))
                if len(found) > page_size:
                    break
            return found

        found = await self._call(page)
        if len(found) > page_size:
            return found[:page_size], found[page_size - 1].key
        return found, ""

    async def ready(self) -> str | None:
        try:
            await self._call(self.client.bucket_exists, self.bucket)
        except Exception as exc:
            return f"S3 at {self._endpoint} is unreachable: {type(exc).__name__}"
        return None

    async def close(self) -> None:
        self.client._http.clear()  # noqa: SLF001 - minio exposes no close()

    # --- helpers -----------------------------------------------------------------------------
    async def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        async with self._bucket_lock:
            if not self._bucket_ready:
                await self._call(self._make_bucket_sync)
                self._bucket_ready = True

    def _make_bucket_sync(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:  # another replica created it first
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    async def _call(self, fn: Callable[..., T], *args: Any, key: str | None = None,
                    changed_ok: bool = False, abandonable: bool = False, **kwargs: Any) -> T:
        """fn in a thread, its failures as StorageErrors; an abandonable fn takes an `abandoned`
        event first (see run_abandonable)."""
        try:
            if abandonable:
                return await run_abandonable(fn, *args, **kwargs)
            return await asyncio.to_thread(fn, *args, **kwargs)
        except StorageError:
            raise
        except Exception as exc:
            if changed_ok and isinstance(exc, S3Error) and exc.code in _CHANGED_CODES:
                raise _Changed() from exc
            raise _translate(exc, key, self._endpoint) from exc


class _Abandonable:
    """A file for minio whose reads fail once the put has been cancelled."""

    def __init__(self, file: Any, abandoned: threading.Event) -> None:
        self._file = file
        self._abandoned = abandoned

    def read(self, size: int = -1) -> bytes:
        if self._abandoned.is_set():
            raise Abandoned("put cancelled")
        return self._file.read(size)


class _Changed(Exception):
    """The object changed between stat and get."""


def _translate(exc: Exception, key: str | None, endpoint: str) -> StorageError:
    if isinstance(exc, S3Error) and exc.code in _NOT_FOUND_CODES and key is not None:
        return NotFound(f"object {key!r} not found")
    if isinstance(exc, S3Error):
        return BackendUnavailable(f"S3 server at {endpoint} refused the request: {exc.code}: {exc.message}")
    if isinstance(exc, MinioException | urllib3.exceptions.HTTPError | OSError):
        return BackendUnavailable(f"S3 server at {endpoint} is unavailable: {type(exc).__name__}")
    return BackendUnavailable(f"S3 request failed: {exc}")


def _info(key: str, stat: Object) -> ObjectInfo:
    metadata = stat.metadata or {}
    sha256 = metadata.get(f"x-amz-meta-{_SHA_META}") or metadata.get(f"X-Amz-Meta-{_SHA_META}") or ""
    etag = (stat.etag or "").strip('"')
    return ObjectInfo(
        key=key,
        size=stat.size or 0,
        sha256=sha256,
        content_type=stat.content_type or DEFAULT_CONTENT_TYPE,
        # The content hash when we wrote the object: identical on every backend and replica.
        etag=sha256 or etag,
        modified_at=stat.last_modified.timestamp() if stat.last_modified else 0.0,
    )


def _release(response: Any) -> None:
    response.close()
    response.release_conn()
