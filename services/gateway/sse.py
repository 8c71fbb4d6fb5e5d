"""A job's states as Server-Sent Events: one `job` event at once and on every change, a comment
line as keep-alive while nothing changes, and the end after a terminal state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson

from services.common.gen.radiology.v1 import common_pb2
from services.common.status import TERMINAL
from services.gateway.clients import JobWatch
from services.gateway.serializers import job_json
from services.gateway.signing import UrlSigner

# Under the idle timeouts of common proxies, so that they keep the stream open.
KEEPALIVE_SECONDS = 15.0
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _event(job: common_pb2.Job, signer: UrlSigner) -> bytes:
    return b"event: job\ndata: " + orjson.dumps(job_json(job, signer)) + b"\n\n"


async def job_events(first: common_pb2.Job, watch: JobWatch, signer: UrlSigner) -> AsyncIterator[bytes]:
    """The event stream of a job from its first state; ends the watch when it ends (job finished,
    stream closed, or the client gone)."""
    try:
        job: common_pb2.Job | None = first
        while job is not None:
            yield _event(job, signer)
            if job.status in TERMINAL:
                return
            while True:
                try:
                    job = await asyncio.wait_for(watch.next(), KEEPALIVE_SECONDS)
                    break
                except TimeoutError:
                    yield b": keep-alive\n\n"
    finally:
        watch.close()
