"""Jobs: upload (POST /jobs), status, list, live events, cancel, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from services.common import logging as log_ctx
from services.common.gen.radiology.v1 import common_pb2
from services.common.identity import IDEMPOTENCY_KEY_PATTERN, IDEMPOTENCY_KEY_RULE, is_valid_idempotency_key
from services.common.protobuf import iso
from services.common.status import PENDING, STATUS_NAMES, status_name, status_value
from services.gateway import sse
from services.gateway.deps import IDENTITY_ERRORS, BackendsDep, CurrentUser, SignerDep, SubmissionsDep
from services.gateway.errors import (
    BACKEND_ERROR,
    CLIENT_DISCONNECTED,
    CONFLICT,
    DUPLICATE_FIELD,
    EXPECTED_MULTIPART,
    FIELD_TOO_LARGE,
    FILE_TOO_LARGE,
    INCOMPLETE_BODY,
    INPUT_NOT_ACCEPTED,
    INVALID_IDEMPOTENCY_KEY,
    INVALID_PARAMETERS,
    INVALID_PARAMS,
    JOB_TOO_LARGE,
    MALFORMED_MULTIPART,
    NO_FILES,
    NOT_FOUND,
    OUTCOME_UNKNOWN,
    RATE_LIMITED,
    SERVICE_UNAVAILABLE,
    STORAGE_QUOTA_EXCEEDED,
    TOO_LARGE,
    TOO_MANY_ACTIVE_JOBS,
    TOO_MANY_FILES,
    UNKNOWN_TASK_TYPE,
    UNSUPPORTED_FILE,
    UPLOAD_STALLED,
    ApiError,
    error_responses,
)
from services.gateway.framing import BodyStream
from services.gateway.schemas import Job, JobList, SubmittedJob
from services.gateway.serializers import JsonBody, job_json
from services.gateway.submit import DEFAULT_TASK_TYPE

router = APIRouter(prefix="/jobs", tags=["jobs"])


async def _job_id(job_id: Annotated[str, Path(description="Job UUID")]) -> str:
    log_ctx.job_id.set(job_id)  # on every log line of the request
    return job_id


JobId = Annotated[str, Depends(_job_id)]

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "task_type": {"type": "string", "default": DEFAULT_TASK_TYPE},
                        "params": {"type": "string", "description": 'JSON object, e.g. {"sigma": 2}'},
                    },
                }
            }
        },
    }
}


_LOCATION = {"Location": {"description": "`/jobs/{job_id}`: where to follow the job",
                          "schema": {"type": "string"}}}


def _idempotency_key(request: Request) -> str:
    values = request.headers.getlist("idempotency-key")
    if not values:
        return ""
    if len(values) > 1:
        raise ApiError(INVALID_IDEMPOTENCY_KEY, "Send the Idempotency-Key header once.")
    if not is_valid_idempotency_key(values[0]):
        raise ApiError(INVALID_IDEMPOTENCY_KEY, f"Idempotency-Key must be {IDEMPOTENCY_KEY_RULE}.")
    return values[0]


@router.post(
    "",
    status_code=202,
    response_model=SubmittedJob,
    openapi_extra=_UPLOAD_BODY,
    summary="Upload files and start a job",
    description=(
        "A refused upload leaves nothing stored. The caller's submission rate and quotas (GET /usage) "
        "are checked before the upload is read, and the stored-bytes quota again as it streams. "
        "With an `Idempotency-Key`, a retry returns the job of the first attempt (200) instead of "
        "creating another; a 503 `outcome_unknown` means: retry with the same key."
    ),
    responses={
        202: {"description": "The job was created", "headers": _LOCATION},
        200: {
            "model": SubmittedJob,
            "description": "The caller already created a job with this Idempotency-Key: that job, as it "
            "is now (nothing of this request is stored)",
            "headers": {
                **_LOCATION,
                "Idempotent-Replayed": {"description": "`true`", "schema": {"type": "string"}},
            },
        },
        **error_responses(
            *IDENTITY_ERRORS, INVALID_IDEMPOTENCY_KEY, EXPECTED_MULTIPART, MALFORMED_MULTIPART,
            DUPLICATE_FIELD, NO_FILES, CLIENT_DISCONNECTED, UPLOAD_STALLED, CONFLICT, FILE_TOO_LARGE,
            JOB_TOO_LARGE, TOO_MANY_FILES, FIELD_TOO_LARGE, TOO_LARGE, INCOMPLETE_BODY, UNSUPPORTED_FILE,
            UNKNOWN_TASK_TYPE, INPUT_NOT_ACCEPTED, INVALID_PARAMS, INVALID_PARAMETERS, RATE_LIMITED,
            TOO_MANY_ACTIVE_JOBS, STORAGE_QUOTA_EXCEEDED, BACKEND_ERROR, SERVICE_UNAVAILABLE,
            OUTCOME_UNKNOWN,
        ),
    },
)
async def create_job(
    request: Request,
    user: CurrentUser,
    submissions: SubmissionsDep,
    # Declared for the API docs; read from request.headers to see repeats (checked in the handler).
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key",
        description="Optional key of this submission, unique per user (a UUID is a good choice): a "
        "retry with the same key returns the same job, never a second one. "
        f"{IDEMPOTENCY_KEY_RULE}.",
        json_schema_extra={"pattern": IDEMPOTENCY_KEY_PATTERN},
    )] = None,
) -> JSONResponse:
    headers = request.headers
    submitted = await submissions.submit(
        user, headers.get("content-type", ""), headers.get("content-length"), BodyStream(request),
        _idempotency_key(request),
    )
    job = submitted.job
    body = {
        "job_id": job.job_id,
        "user_id": job.user_id,
        "status": status_name(job.status) if job.status else PENDING,
        "task_ids": [t.task_id for t in job.tasks],
        "created_at": iso(job.created_at, job.HasField("created_at")),
    }
    reply_headers = {"Location": f"/jobs/{job.job_id}"}
    if submitted.replayed:
        reply_headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=200 if submitted.replayed else 202, headers=reply_headers)


@router.get(
    "",
    summary="The caller's jobs, newest first",
    response_model=JobList,
    responses=error_responses(*IDENTITY_ERRORS, INVALID_PARAMETERS, BACKEND_ERROR, SERVICE_UNAVAILABLE),
)
async def list_jobs(
    user: CurrentUser,
    backends: BackendsDep,
    signer: SignerDep,
    status: Annotated[str | None, Query(description=f"One of {', '.join(STATUS_NAMES)}")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JsonBody:
    status_enum = common_pb2.STATUS_UNSPECIFIED
    if status:
        if status.upper() not in STATUS_NAMES:
            raise ApiError(INVALID_PARAMETERS, f"status must be one of {', '.join(STATUS_NAMES)}.")
        status_enum = status_value(status.upper())
    page = await backends.jobs.list_jobs(user, status_enum, limit, cursor or "")
    jobs = [job_json(j, signer) for j in page.jobs]
    return JsonBody({"jobs": jobs, "next_cursor": page.next_cursor or None})


_JOB_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["job"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/Job"},
        },
    },
}

# Every route on one job: its owner sees it, anyone else gets the 404 of a job that does not exist.
_JOB_ERRORS = error_responses(*IDENTITY_ERRORS, NOT_FOUND, BACKEND_ERROR, SERVICE_UNAVAILABLE)


@router.get(
    "/{job_id}", summary="One job with its tasks and results", response_model=Job, responses=_JOB_ERRORS
)
async def get_job(
    job_id: JobId, user: CurrentUser, backends: BackendsDep, signer: SignerDep
) -> JsonBody:
    return JsonBody(job_json(await backends.jobs.get_job(user, job_id), signer))


@router.get(
    "/{job_id}/events",
    summary="Server-Sent Events: the job at once and on every change",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`event: job` messages, each with a Job (JSON) as its data",
            # Before OpenAPI 3.2 the schema of an event stream describes each event.
            "content": {"text/event-stream": {"schema": _JOB_EVENT}},
        },
        **_JOB_ERRORS,
    },
)
async def job_events(
    job_id: JobId, user: CurrentUser, backends: BackendsDep, signer: SignerDep
) -> StreamingResponse:
    # The first state arrives before the answer starts, so that 404/503 are proper JSON errors.
    first, watch = await backends.jobs.watch_job(user, job_id)
    return StreamingResponse(
        sse.job_events(first, watch, signer), media_type="text/event-stream", headers=sse.HEADERS
    )


@router.post(
    "/{job_id}/cancel", summary="Cancel the unfinished tasks of a job", response_model=Job,
    responses=_JOB_ERRORS,
)
async def cancel_job(job_id: JobId, user: CurrentUser, backends: BackendsDep, signer: SignerDep) -> JsonBody:
    return JsonBody(job_json(await backends.jobs.cancel_job(user, job_id), signer))


@router.delete("/{job_id}", status_code=204, summary="Delete a job and its files", responses=_JOB_ERRORS)
async def delete_job(job_id: JobId, user: CurrentUser, backends: BackendsDep) -> Response:
    await backends.jobs.delete_job(user, job_id)
    return Response(status_code=204)
