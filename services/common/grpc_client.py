"""Long-lived grpc.aio channels to peer services, with deadlines and trace propagation."""

from __future__ import annotations

import re
import uuid

import grpc

from services.common import logging as log_ctx
from services.common import tracing
from services.common.grpc_server import GRPC_OPTIONS

# round_robin keeps a connection to every address the name resolves to and spreads calls over
# the ready ones. A Kubernetes headless Service's name (and a compose service's) resolves to every
# ready pod (replica), so each process uses all replicas of a peer, not the one it happened to
# connect to first; servers close connections after a while (grpc_server.SERVER_OPTIONS) so that
# the name is resolved again and new pods get calls too.
_SERVICE_CONFIG = """{
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [{}],
    "waitForReady": false
  }]
}"""

# host:port with a host name, an IPv4 address or a bracketed IPv6 address: no scheme of its own.
_PLAIN_ADDR = re.compile(r"^(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.%A-Za-z]+\]):[0-9]+$")


# gRPC's default reconnect backoff grows to 120 s: a peer restarted after a short outage would
# stay "unavailable" to us long after it is back. Retry connecting at least every 2 s instead.
_RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def target(addr: str) -> str:
    """The channel target of a configured address: a plain "host:port" through the DNS resolver
    (every address of the name, re-resolved on reconnect); an address with its own gRPC scheme
    ("dns:", "ipv4:", "unix:", ...) as it is."""
    return f"dns:///{addr}" if _PLAIN_ADDR.match(addr) else addr


def channel(addr: str) -> grpc.aio.Channel:
    """One channel per peer for the life of the process (it reconnects by itself), balancing calls
    over every address of the peer."""
    return grpc.aio.insecure_channel(
        target(addr),
        options=[*GRPC_OPTIONS, *_RECONNECT_OPTIONS, ("grpc.service_config", _SERVICE_CONFIG)],
    )


def call_metadata() -> list[tuple[str, str]]:
    """Metadata for an outgoing call: trace context and the current request id."""
    rid = log_ctx.request_id.get() or uuid.uuid4().hex
    return tracing.grpc_metadata({"x-request-id": rid})
