"""Long-lived grpc.aio channels to peer services, with deadlines and trace propagation."""

from __future__ import annotations

import json
import re
import uuid

import grpc

from services.common import logging as log_ctx
from services.common import tracing
from services.common.grpc_server import GRPC_OPTIONS

# RADIOLOGY_GRPC_LOAD_BALANCING picks how a channel uses the addresses of a peer's name:
# - "pick_first" (default): one connection. A channel that lost its peer stays idle and connects
#   again at its next call, which waits for the connection: a restarted peer answers at once.
# - "round_robin" (the Kubernetes ConfigMap): a connection to every address the name resolves to
#   (a headless Service's name gives every ready pod), calls spread over the ready ones, and servers
#   close connections after a while (grpc_server.SERVER_OPTIONS) so that new pods get calls too.
#   Its price: while every address of a peer is down, calls fail at once, also for up to one
#   reconnect backoff (2 s) after the peer is back (with several pods, one is normally up).
LOAD_BALANCING_POLICIES = ("pick_first", "round_robin")


def _service_config(policy: str) -> str:
    return json.dumps({
        "loadBalancingConfig": [{policy: {}}],
        "methodConfig": [{"name": [{}], "waitForReady": False}],
    })


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


def channel(addr: str, load_balancing: str = "pick_first") -> grpc.aio.Channel:
    """One channel per peer for the life of the process (it reconnects by itself); `load_balancing`
    is one of LOAD_BALANCING_POLICIES (settings.grpc_load_balancing)."""
    if load_balancing not in LOAD_BALANCING_POLICIES:
        raise ValueError(f"unknown gRPC load balancing policy {load_balancing!r}")
    config = _service_config(load_balancing)
    return grpc.aio.insecure_channel(
        target(addr), options=[*GRPC_OPTIONS, *_RECONNECT_OPTIONS, ("grpc.service_config", config)]
    )


def call_metadata() -> list[tuple[str, str]]:
    """Metadata for an outgoing call: trace context and the current request id."""
    rid = log_ctx.request_id.get() or uuid.uuid4().hex
    return tracing.grpc_metadata({"x-request-id": rid})
