"""The operations catalogue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.gateway.deps import CatalogueDep
from services.gateway.errors import BACKEND_ERROR, SERVICE_UNAVAILABLE, error_responses

router = APIRouter(prefix="/operations", tags=["operations"])


@router.get(
    "",
    summary="Operations, the inputs they accept, their params as JSON Schema",
    # While processors restart, the last catalogue seen is served: 503 only before any answered.
    responses=error_responses(BACKEND_ERROR, SERVICE_UNAVAILABLE),
)
async def list_operations(catalogue: CatalogueDep) -> dict[str, Any]:
    return {"operations": await catalogue.operations()}
