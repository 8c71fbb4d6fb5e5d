"""gRPC server bootstrap shared by the services: health, reflection, metrics, graceful SIGTERM.

A service's server.py builds its servicers and calls `run_server(...)`; everything else about
process lifecycle lives here.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import context as otel_context
from prometheus_client import start_http_server

from services.common import logging as log_ctx
from services.common import runtime, tracing
from services.common.config import Settings, listen_port

log = logging.getLogger(__name__)

# A health-check entry that says only "this process serves": SERVING from start until shutdown,
# whatever the dependencies do. Kubernetes' liveness probes ask for it (`grpc.service: liveness`);
# readiness asks for the overall entry "", which goes NOT_SERVING while NATS, the database or the
# storage backend is unreachable. An outage of a dependency then takes pods out of rotation, and
# never restarts them (a restart would not bring the dependency back, and every client reconnects
# by itself).
LIVENESS_SERVICE = "liveness"

# Larger than the 1 MiB storage chunks plus framing.
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # BDP probing grows a stream's receive window far past what 1 MiB chunks need: a 2 GiB download
    # then swelled the gateway by 40-107 MiB (5-14 MiB without it, at about the same MiB/s).
    ("grpc.http2.bdp_probe", 0),
]

# Clients balance calls over every address a peer's name resolves to (grpc_client), but they
# resolve it only when they (re)connect: without an end to connections, pods that start later
# (scale-up, rolling update) would get no calls from clients that are already running. After
# MAX_CONNECTION_AGE_MS (gRPC adds +-10 % jitter) the server sends GOAWAY: the client sends no new
# call on that connection, resolves the name again and connects anew, while the calls already
# running on the old connection go on to their end. The grace is how long they may still take
# before the server cuts the connection; it has no limit here (gRPC's INT_MAX means "infinite"),
# because the streams have no overall deadline by design: a 2 GiB Put or Get moves as fast as the
# user's link allows, and WatchJob/SSE last as long as the job is watched. A stream on an old
# connection holds only that connection open; it delays no other call and no rebalancing.
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 2**31 - 1

# Options of the servers only (clients use GRPC_OPTIONS).
SERVER_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
    ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
]


class ContextInterceptor(grpc.aio.ServerInterceptor):
    """Puts trace context and x-request-id from call metadata into the current context."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        md = {k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)}
        otel_context.attach(tracing.extract(md))
        if rid := md.get("x-request-id"):
            log_ctx.request_id.set(rid)
        return await continuation(handler_call_details)


def create_server(options: Sequence[tuple[str, int]] = SERVER_OPTIONS) -> grpc.aio.Server:
    return grpc.aio.server(interceptors=[ContextInterceptor()], options=options)


async def run_server(
    *,
    settings: Settings,
    addr: str,
    server: grpc.aio.Server,
    service_names: Sequence[str],
    on_start: Callable[[], Awaitable[None]] | None = None,
    on_drain: Callable[[], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    ready: Callable[[], Awaitable[str | None]] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain: health goes NOT_SERVING, `on_drain` finishes or hands
    back in-flight work, the server stops accepting calls (with a grace period), then `on_stop`.

    `ready` checks what the service depends on (NATS, its database, its storage backend) and returns
    None or what is wrong; health says NOT_SERVING while it is wrong, so readiness probes and the
    gateway's /readyz see it. The LIVENESS_SERVICE entry stays SERVING until shutdown."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)

    bind = f"{settings.listen_host}:{listen_port(addr)}"
    if server.add_insecure_port(bind) == 0:
        raise SystemExit(f"cannot listen on {bind}")
    if settings.metrics_port:
        try:
            start_http_server(settings.metrics_port, addr=settings.listen_host)
        except OSError as exc:
            raise SystemExit(
                f"cannot serve metrics on {settings.listen_host}:{settings.metrics_port} ({exc.strerror}); "
                "set RADIOLOGY_METRICS_PORT to a free port, or 0 for none"
            ) from None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if on_start:
        await on_start()
    await server.start()
    for name in ["", *service_names, LIVENESS_SERVICE]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving on %s", bind)
    runtime.settle()
    watcher = asyncio.create_task(_watch_readiness(ready, health_servicer, ["", *service_names]))

    await stop.wait()
    log.info("shutting down")
    watcher.cancel()
    await health_servicer.enter_graceful_shutdown()
    if on_drain:
        try:
            await asyncio.wait_for(on_drain(), settings.shutdown_grace_seconds)
        except TimeoutError:
            log.warning("drain did not finish in %.0fs", settings.shutdown_grace_seconds)
    await server.stop(grace=min(5.0, settings.shutdown_grace_seconds))
    if on_stop:
        await on_stop()
    log.info("stopped")


READY_CHECK_SECONDS = 2.0


async def _watch_readiness(
    ready: Callable[[], Awaitable[str | None]] | None,
    health_servicer: health.aio.HealthServicer,
    names: Sequence[str],
) -> None:
    if ready is None:
        return
    problem: str | None = None

    async def report(now: str | None) -> None:
        nonlocal problem
        if now == problem:
            return
        status = health_pb2.HealthCheckResponse
        for name in names:
            await health_servicer.set(name, status.SERVING if now is None else status.NOT_SERVING)
        if now is None:
            log.info("ready again")
        else:
            log.warning("not ready: %s", now)
        problem = now

    while True:
        await asyncio.sleep(READY_CHECK_SECONDS)
        check = asyncio.ensure_future(ready())
        done, _ = await asyncio.wait({check}, timeout=READY_CHECK_SECONDS)
        if not done:  # a hung dependency: not ready now, and no second check piles up behind it
            await report("readiness check is taking too long")
            await asyncio.wait({check})
        try:
            await report(check.result())
        except Exception as exc:  # a check that breaks means not ready, never a dead watcher
            await report(f"readiness check failed: {exc}")
