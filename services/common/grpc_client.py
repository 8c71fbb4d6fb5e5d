"""Long-lived grpc.aio channels to peer services, with deadlines and trace propagation."""

from __future__ import annotations

import uuid

import grpc

from services.common import logging as log_ctx
from services.common import tracing
from services.common.grpc_server import GRPC_OPTIONS

_SERVICE_CONFIG = """{
  "methodConfig": [{
    "name": [{}],
    "waitForReady": false
  }]
}"""


# gRPC's default reconnect backoff grows to 120 s: a peer restarted after a short outage would
# stay "unavailable" to us long after it is back. Retry connecting at least every 2 s instead.
_RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def channel(addr: str) -> grpc.aio.Channel:
    """One channel per peer for the life of the process (it reconnects by itself)."""
    return grpc.aio.insecure_channel(
        addr, options=[*GRPC_OPTIONS, *_RECONNECT_OPTIONS, ("grpc.service_config", _SERVICE_CONFIG)]
    )


def call_metadata() -> list[tuple[str, str]]:
    """Metadata for an outgoing call: trace context and the current request id."""
    rid = log_ctx.request_id.get() or uuid.uuid4().hex
    return tracing.grpc_metadata({"x-request-id": rid})
