"""The one object-key validator shared by every backend.

Keys are built by the platform ("{user_id}/{job_id}/{filename}"), but the storage service is the
last line of defence: a key must never escape the store's root or alias another key on disk.
"""

from __future__ import annotations

import re

from services.storage.backends.base import DEFAULT_CONTENT_TYPE, InvalidArgument, InvalidKey

MAX_KEY_BYTES = 1024
# A media type is printed into HTTP headers later: printable ASCII only, no line breaks.
_CONTENT_TYPE = re.compile(r"[\x20-\x7e]{1,255}")


def validate_key(key: str, what: str = "key") -> str:
    """Return `key` unchanged, or raise InvalidKey saying what is wrong with it."""
    if not key:
        raise InvalidKey(f"{what} is empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey(f"{what} {key!r} is not valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKey(f"{what} is {size} bytes long; the limit is {MAX_KEY_BYTES}")
    if key.startswith("/"):
        raise InvalidKey(f"{what} {key!r} must not start with '/'")
    if "\\" in key:
        raise InvalidKey(f"{what} {key!r} must not contain a backslash")
    # NUL, C0/C1 control characters and DEL: they break paths, logs and HTTP headers.
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in key):
        raise InvalidKey(f"{what} {key!r} must not contain NUL or control characters")
    for segment in key.split("/"):
        if segment == "":
            raise InvalidKey(f"{what} {key!r} has an empty segment ('//' or a trailing '/')")
        if segment in (".", ".."):
            raise InvalidKey(f"{what} {key!r} must not contain '.' or '..' segments")
    return key


def validate_prefix(prefix: str) -> str:
    """A prefix for DeletePrefix: a valid key followed by '/', so "alice/job1/" never matches
    "alice/job10/..."."""
    if not prefix.endswith("/"):
        raise InvalidKey(f"prefix {prefix!r} must end with '/'")
    validate_key(prefix[:-1], "prefix")
    return prefix


def validate_list_args(prefix: str, page_token: str) -> None:
    """List takes an empty prefix (everything) or a DeletePrefix-style one, and a token that is
    a key under that prefix (the last key of the previous page)."""
    if prefix:
        validate_prefix(prefix)
    if page_token:
        validate_key(page_token, "page_token")
        if not page_token.startswith(prefix):
            raise InvalidKey(f"page_token {page_token!r} is not under prefix {prefix!r}")


def validate_content_type(content_type: str) -> str:
    """The content type to record ("" means application/octet-stream)."""
    if not content_type:
        return DEFAULT_CONTENT_TYPE
    if not _CONTENT_TYPE.fullmatch(content_type):
        raise InvalidArgument(
            f"content type {content_type[:80]!r} must be 1-255 printable ASCII characters")
    return content_type
