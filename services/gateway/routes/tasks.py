"""Tasks: one input file of a job."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from services.common import logging as log_ctx
from services.common.gen.radiology.v1 import jobs_pb2
from services.gateway.deps import BackendsDep, CurrentUser, SignerDep
from services.gateway.errors import backend_errors, error_responses
from services.gateway.serializers import task_json

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get("/{task_id}", summary="One task (owner only)", responses=error_responses(400, 401, 404, 503))
async def get_task(
    task_id: Annotated[str, Path(description="Task UUID")],
    user: CurrentUser,
    backends: BackendsDep,
    signer: SignerDep,
) -> dict[str, Any]:
    log_ctx.task_id.set(task_id)
    with backend_errors("jobs", missing_is_404=True):
        task = await backends.call("jobs", "GetTask", jobs_pb2.GetTaskRequest(user_id=user, task_id=task_id))
    return task_json(task, signer)
