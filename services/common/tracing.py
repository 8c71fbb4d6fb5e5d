"""OpenTelemetry context propagation across HTTP, gRPC metadata and NATS headers.

Exporting spans is optional (no exporter is configured by default); the W3C traceparent still
travels so that an operator who adds an exporter gets connected traces.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider

_provider_set = False


def setup_tracing(service: str) -> None:
    global _provider_set
    if not _provider_set:
        from opentelemetry.sdk.resources import Resource

        trace.set_tracer_provider(TracerProvider(resource=Resource.create({"service.name": service})))
        _provider_set = True


def inject(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add traceparent/tracestate of the current context to a headers or metadata dict."""
    propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> context.Context:
    return propagate.extract(dict(carrier or {}))


def grpc_metadata(extra: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """gRPC call metadata carrying the trace context (and e.g. x-request-id)."""
    carrier: dict[str, str] = dict(extra or {})
    inject(carrier)
    return [(k.lower(), v) for k, v in carrier.items()]
