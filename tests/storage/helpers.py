"""Small helpers shared by the storage tests."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterable

from services.storage.backends import S3Backend


def make_s3(endpoint: str) -> S3Backend:
    # A fresh bucket per test, so tests never see each other's objects.
    return S3Backend(endpoint, f"t-{uuid.uuid4().hex[:20]}", "test", "test")


def rss_bytes() -> int:
    """This process's resident memory, from /proc/self/status (VmRSS, in kB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS missing from /proc/self/status")


async def stream(data: bytes, sizes: Iterable[int] = (1 << 20,)) -> AsyncIterator[bytes]:
    """data in chunks whose sizes cycle through `sizes`."""
    sizes = list(sizes)
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        yield data[pos : pos + n]
        pos, i = pos + n, i + 1


async def read_all(body: AsyncIterator[bytes]) -> tuple[bytes, list[int]]:
    """All bytes of a body and the size of each chunk."""
    chunks = [chunk async for chunk in body]
    return b"".join(chunks), [len(c) for c in chunks]


def free_port_closed() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
