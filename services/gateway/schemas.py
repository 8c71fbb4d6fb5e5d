"""The shapes of the REST API's answers, for the OpenAPI document (and so for schemathesis and
generated clients). The routes that clients poll build their JSON with serializers.py and send it
with orjson; these models describe the same fields, which tests/gateway/test_gateway_schemas.py
checks against real answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from services.common.status import STATUS_NAMES

Status = Literal["PENDING", "RUNNING", "SUCCESS", "FAILED", "CANCELLED"]
if list(get_args(Status)) != STATUS_NAMES:
    raise TypeError(f"schemas.Status must list {STATUS_NAMES}")

Progress = Field(ge=0, le=100, description="0-100, never going backwards")


class Output(BaseModel):
    """One file a task produced."""

    filename: str
    url: str = Field(description="Signed URL of the file (GET /files/...), valid for a limited time")
    media_type: str = Field(description="e.g. image/png, application/gzip")
    size: int = Field(ge=0, description="Bytes")
    sha256: str
    role: str = Field(description="`primary`, or what else it is (e.g. a preview)")


class TaskResult(BaseModel):
    """What a successful task produced."""

    input_file: str
    output_file: str = Field(description="The primary output's file name (the end of output_url)")
    output_url: str | None = Field(description="Signed URL of the primary output")
    task_type: str
    outputs: list[Output]
    metadata: dict[str, Any] = Field(description="Facts read from the input (format, modality, shape, ...)")


class Task(BaseModel):
    """One input file of a job, processed once."""

    task_id: str
    status: Status
    progress: int = Progress
    input_file: str
    error: str | None = Field(description="Why it failed (a clear message, never a stack trace)")
    started_at: datetime | None
    finished_at: datetime | None
    result: TaskResult | None = Field(description="Set when status is SUCCESS")
    logs: list[str] = Field(
        description="What the processor noted (decoder, assumptions, warnings, step times): at most "
        "50 lines of 300 characters, set when the task has ended"
    )


class Job(BaseModel):
    """A job: one operation applied to each of its input files."""

    job_id: str
    user_id: str
    status: Status
    progress: int = Progress
    message: str = Field(description="Human summary")
    task_type: str
    params: dict[str, Any] = Field(description="The operation's params, defaults filled in")
    created_at: datetime | None
    updated_at: datetime | None
    task_results: list[Task]


class SubmittedJob(BaseModel):
    """The job a submission created (202), or that an earlier one with the same Idempotency-Key
    created (200)."""

    job_id: str
    user_id: str
    status: Status
    task_ids: list[str] = Field(description="One task per input file (per series of a ZIP)")
    created_at: datetime | None


class JobList(BaseModel):
    """One page of the caller's jobs, newest first."""

    jobs: list[Job]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last")


class Operation(BaseModel):
    """An operation of the catalogue (a `task_type`)."""

    name: str = Field(description="The task_type, e.g. `blur`")
    title: str
    description: str
    accepts: list[str] = Field(description="Kinds (2d, 3d), then formats (png, jpeg, dicom, nifti, ...)")
    params_schema: dict[str, Any] = Field(description="JSON Schema of its params, with defaults")
    outputs: str = Field(description="What it produces")


class OperationList(BaseModel):
    operations: list[Operation]


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    services: dict[str, str] = Field(description="Each backing service and its health (SERVING)")
