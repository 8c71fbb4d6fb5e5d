"""The operations catalogue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.gateway.deps import CatalogueDep

router = APIRouter(prefix="/operations", tags=["operations"])


@router.get("", summary="Operations, the inputs they accept, their params as JSON Schema")
async def list_operations(catalogue: CatalogueDep) -> dict[str, Any]:
    return {"operations": await catalogue.operations()}
