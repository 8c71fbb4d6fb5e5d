"""Tasks: one input file of a job."""

from __future__ import annotations

from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Path

from services.common import logging as log_ctx
from services.common.gen.radiology.v1 import jobs_pb2
from services.gateway.clients import BackendError
from services.gateway.deps import BackendsDep, CurrentUser, SignerDep
from services.gateway.errors import not_found
from services.gateway.serializers import task_json

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get("/{task_id}", summary="One task (owner only)")
async def get_task(
    task_id: Annotated[str, Path(description="Task UUID")],
    user: CurrentUser,
    backends: BackendsDep,
    signer: SignerDep,
) -> dict[str, Any]:
    log_ctx.task_id.set(task_id)
    try:
        task = await backends.call("jobs", "GetTask", jobs_pb2.GetTaskRequest(user_id=user, task_id=task_id))
    except BackendError as exc:
        if exc.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise not_found() from None
        raise
    return task_json(task, signer)
