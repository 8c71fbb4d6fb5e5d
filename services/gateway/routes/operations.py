"""The operations catalogue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.gateway.deps import CatalogueDep
from services.gateway.errors import error_responses

router = APIRouter(prefix="/operations", tags=["operations"])


@router.get(
    "",
    summary="Operations, the inputs they accept, their params as JSON Schema",
    responses=error_responses(
        503, e503="No processor has answered yet (`service_unavailable`); retry after Retry-After seconds."
    ),
)
async def list_operations(catalogue: CatalogueDep) -> dict[str, Any]:
    return {"operations": await catalogue.operations()}
