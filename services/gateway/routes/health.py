"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

import grpc
from fastapi import APIRouter, Response
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common.grpc_client import call_metadata
from services.gateway.deps import BackendsDep
from services.gateway.errors import NOT_READY, ApiError, error_responses
from services.gateway.schemas import Health, Ready
from services.gateway.serializers import JsonBody

router = APIRouter(tags=["health"])

READY_TIMEOUT = 1.0


@router.get("/healthz", summary="The gateway process is up", response_model=Health)
async def healthz() -> JsonBody:
    return JsonBody({"status": "ok"})


async def _check(channel: grpc.aio.Channel) -> str:
    try:
        resp = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=READY_TIMEOUT, metadata=call_metadata()
        )
    except grpc.aio.AioRpcError:
        return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


@router.get(
    "/readyz",
    summary="Every backing service is reachable and serving",
    response_model=Ready,
    responses=error_responses(NOT_READY),
)
async def readyz(backends: BackendsDep) -> JsonBody:
    names = list(backends.channels)
    states = await asyncio.gather(*(_check(backends.channels[n]) for n in names))
    services = dict(zip(names, states, strict=True))
    down = [n for n, s in services.items() if s != "SERVING"]
    if down:
        raise ApiError(NOT_READY, f"Backing services not reachable: {', '.join(down)}")
    return JsonBody({"status": "ready", "services": services})


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
