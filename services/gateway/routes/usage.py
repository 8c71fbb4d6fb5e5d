"""The caller's usage and limits, and what a client (the web UI) needs to know about this gateway."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.gateway.deps import IDENTITY_ERRORS, BackendsDep, CurrentUser, SettingsDep
from services.gateway.errors import BACKEND_ERROR, SERVICE_UNAVAILABLE, error_responses

router = APIRouter(tags=["usage"])


class Limits(BaseModel):
    """The caller's limits; null means no limit."""

    submissions_per_minute: int | None = Field(description="Jobs that may be submitted a minute")
    submission_burst: int | None = Field(description="Jobs that may be submitted at once after a quiet spell")
    max_active_jobs: int | None = Field(description="Jobs PENDING or RUNNING at once (over it: 429)")
    max_stored_bytes: int | None = Field(description="Bytes of inputs and outputs stored (over it: 413)")


class Usage(BaseModel):
    """What the caller uses now, against their limits."""

    user_id: str
    active_jobs: int = Field(description="Jobs PENDING or RUNNING")
    stored_bytes: int = Field(description="Bytes of their jobs' inputs and finished outputs")
    submissions_available: int | None = Field(
        description="Jobs that may be submitted right now without waiting; null without a rate limit"
    )
    limits: Limits


def _limit(value: int) -> int | None:
    return value or None


@router.get(
    "/usage",
    summary="The caller's active jobs, stored bytes and limits",
    responses=error_responses(*IDENTITY_ERRORS, BACKEND_ERROR, SERVICE_UNAVAILABLE),
)
async def get_usage(user: CurrentUser, backends: BackendsDep) -> Usage:
    found = await backends.jobs.get_usage(user)
    lim = found.limits
    return Usage(
        user_id=found.user_id,
        active_jobs=found.active_jobs,
        stored_bytes=found.stored_bytes,
        submissions_available=found.submissions_available if lim.submissions_per_minute else None,
        limits=Limits(
            submissions_per_minute=_limit(lim.submissions_per_minute),
            submission_burst=_limit(lim.submission_burst),
            max_active_jobs=_limit(lim.max_active_jobs),
            max_stored_bytes=_limit(lim.max_stored_bytes),
        ),
    )


class ClientConfig(BaseModel):
    """How a client talks to this gateway."""

    auth: Literal["header", "jwt"] = Field(
        description="`header`: send X-User-ID; `jwt`: send `Authorization: Bearer <token>`"
    )


@router.get("/config", summary="How to authenticate with this gateway (for the web UI)")
async def get_config(settings: SettingsDep) -> ClientConfig:
    return ClientConfig(auth=settings.auth)
