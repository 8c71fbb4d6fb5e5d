"""Per-request context: request id, trace context, access log line and Prometheus metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid

from opentelemetry import context as otel_context
from prometheus_client import Counter, Histogram
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import Mount
from starlette.types import Message, Receive, Scope, Send

from services.common import logging as log_ctx
from services.common import tracing
from services.gateway.asgi import HttpMiddleware, ResponseStart

access_log = logging.getLogger("services.gateway.access")

REQUESTS = Counter(
    "api_request_rate", "HTTP requests by route template, method and status code", ["route", "method", "code"]
)
LATENCY = Histogram(
    "api_request_duration_seconds",
    "HTTP request latency (time to the end of the response body)",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def route_label(scope: Scope) -> str:
    """The route template ("/jobs/{job_id}"), never the raw path, so label values stay few."""
    route = scope.get("route")
    if isinstance(route, Mount):
        return "static"
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContextMiddleware(HttpMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        incoming = headers.get("x-request-id", "")
        rid = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        rid_token = log_ctx.request_id.set(rid)
        job_token = log_ctx.job_id.set(None)
        task_token = log_ctx.task_id.set(None)
        otel_token = otel_context.attach(tracing.extract(headers))
        start = time.perf_counter()

        async def with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-ID", rid)
            await send(message)

        response = ResponseStart(with_request_id)
        try:
            await self.app(scope, receive, response.send)
        finally:
            elapsed = time.perf_counter() - start
            route, method = route_label(scope), scope["method"]
            status = response.status or 500
            REQUESTS.labels(route, method, str(status)).inc()
            LATENCY.labels(route, method).observe(elapsed)
            access_log.info("%s %s %d %.1fms", method, scope["path"], status, elapsed * 1000)
            otel_context.detach(otel_token)
            log_ctx.task_id.reset(task_token)
            log_ctx.job_id.reset(job_token)
            log_ctx.request_id.reset(rid_token)
