"""A JobService refusal for a user's limit, carried explicitly: RESOURCE_EXHAUSTED with a
LimitExceeded message (jobs.proto) in the binary trailing metadata entry LIMIT_METADATA_KEY. The
jobs service writes it, the gateway reads it (its own code for each limit)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import DecodeError

from services.common.gen.radiology.v1 import jobs_pb2

LIMIT_METADATA_KEY = "radiology-limit-exceeded-bin"


def limit_trailer(refusal: jobs_pb2.LimitExceeded) -> tuple[tuple[str, bytes], ...]:
    return ((LIMIT_METADATA_KEY, refusal.SerializeToString()),)


def limit_exceeded(trailing_metadata: Iterable[Any] | None) -> jobs_pb2.LimitExceeded | None:
    """The LimitExceeded of a call's trailing metadata, or None."""
    for item in trailing_metadata or ():
        key, value = item
        if key == LIMIT_METADATA_KEY and isinstance(value, bytes):
            try:
                found = jobs_pb2.LimitExceeded.FromString(value)
            except DecodeError:
                return None
            return found if found.limit else None
    return None
