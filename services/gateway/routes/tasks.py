"""Tasks: one input file of a job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from services.common import logging as log_ctx
from services.gateway.deps import IDENTITY_ERRORS, BackendsDep, CurrentUser, SignerDep
from services.gateway.errors import BACKEND_ERROR, NOT_FOUND, SERVICE_UNAVAILABLE, error_responses
from services.gateway.schemas import Task
from services.gateway.serializers import JsonBody, task_json

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get(
    "/{task_id}",
    summary="One task (owner only)",
    response_model=Task,
    responses=error_responses(*IDENTITY_ERRORS, NOT_FOUND, BACKEND_ERROR, SERVICE_UNAVAILABLE),
)
async def get_task(
    task_id: Annotated[str, Path(description="Task UUID")],
    user: CurrentUser,
    backends: BackendsDep,
    signer: SignerDep,
) -> JsonBody:
    log_ctx.task_id.set(task_id)
    return JsonBody(task_json(await backends.jobs.get_task(user, task_id), signer))
