"""Storage backends: a local folder (default) or an S3/MinIO-compatible bucket.

`backend_from_url(settings)` picks one from RADIOLOGY_STORAGE_URL:
  file://var/objects       a folder relative to the working directory
  file:///srv/objects      an absolute folder
  s3://host:port/bucket    with RADIOLOGY_S3_ACCESS_KEY / _SECRET_KEY / _REGION / _SECURE
"""

from __future__ import annotations

from urllib.parse import urlsplit

from services.common.config import Settings
from services.storage.backends.base import (
    CHUNK_SIZE,
    AlreadyExists,
    Backend,
    BackendUnavailable,
    Body,
    InvalidArgument,
    InvalidKey,
    NotFound,
    ObjectInfo,
    OutOfRange,
    StorageError,
    TooLarge,
)
from services.storage.backends.keys import validate_content_type, validate_key, validate_prefix
from services.storage.backends.local import LocalBackend
from services.storage.backends.s3 import S3Backend

__all__ = [
    "CHUNK_SIZE", "AlreadyExists", "Backend", "BackendUnavailable", "Body", "InvalidArgument", "InvalidKey",
    "LocalBackend", "NotFound", "ObjectInfo", "OutOfRange", "S3Backend", "StorageError",
    "TooLarge", "backend_from_url", "validate_content_type", "validate_key", "validate_prefix",
]


def backend_from_url(settings: Settings) -> Backend:
    """The backend RADIOLOGY_STORAGE_URL names; ValueError with a clear message otherwise."""
    url = settings.storage_url
    if url.startswith("file://"):
        path = url[len("file://"):]
        if not path:
            raise ValueError(f"storage URL {url!r} names no folder (e.g. file://var/objects)")
        return LocalBackend(path, fsync=settings.storage_fsync)
    if url.startswith("s3://"):
        parts = urlsplit(url)
        bucket = parts.path.strip("/")
        if not parts.netloc or not bucket or "/" in bucket:
            raise ValueError(f"storage URL {url!r} must look like s3://host:port/bucket")
        return S3Backend(parts.netloc, bucket, settings.s3_access_key, settings.s3_secret_key,
                         settings.s3_region, settings.s3_secure)
    raise ValueError(f"storage URL {url!r} must start with file:// or s3://")
