"""The operations catalogue."""

from __future__ import annotations

from fastapi import APIRouter

from services.gateway.deps import CatalogueDep
from services.gateway.errors import BACKEND_ERROR, SERVICE_UNAVAILABLE, error_responses
from services.gateway.schemas import OperationList
from services.gateway.serializers import JsonBody

router = APIRouter(prefix="/operations", tags=["operations"])


@router.get(
    "",
    summary="Operations, the inputs they accept, their params as JSON Schema",
    response_model=OperationList,
    # While processors restart, the last catalogue seen is served: 503 only before any answered.
    responses=error_responses(BACKEND_ERROR, SERVICE_UNAVAILABLE),
)
async def list_operations(catalogue: CatalogueDep) -> JsonBody:
    return JsonBody({"operations": await catalogue.operations()})
