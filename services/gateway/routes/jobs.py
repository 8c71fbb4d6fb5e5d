"""Jobs: upload (POST /jobs), status, list, live events, cancel, delete."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from python_multipart.multipart import parse_options_header

from services.common import logging as log_ctx
from services.common.gen.radiology.v1 import common_pb2, jobs_pb2
from services.common.grpc_client import call_metadata
from services.common.protobuf import iso, to_struct
from services.common.status import STATUS_NAMES, TERMINAL, status_name, status_value
from services.gateway.clients import UNREACHABLE, BackendError
from services.gateway.deps import BackendsDep, CatalogueDep, CurrentUser, SettingsDep, SignerDep
from services.gateway.errors import ApiError, backend_errors, error_responses, not_found
from services.gateway.framing import BodyStream
from services.gateway.serializers import job_json
from services.gateway.text import ascii_digits
from services.gateway.uploads import UploadReceiver

log = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["jobs"])

DEFAULT_TASK_TYPE = "blur"
KEEPALIVE_SECONDS = 15.0
# Room for multipart framing (boundaries and part headers) on top of the job's file bytes.
MULTIPART_OVERHEAD = 64 * 1024

JobId = Annotated[str, Path(description="Job UUID")]

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


def _boundary(request: Request) -> bytes:
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise ApiError(400, "expected_multipart", "Send the files as multipart/form-data (field 'files').")
    return boundary


def _check_content_length(request: Request, max_job_bytes: int) -> None:
    length = request.headers.get("content-length")
    if length and ascii_digits(length) and int(length) > max_job_bytes + MULTIPART_OVERHEAD:
        raise ApiError(
            413, "job_too_large", f"The upload exceeds the limit of {max_job_bytes} bytes per job."
        )


async def _validate_params(
    catalogue: CatalogueDep, task_type: str, params: dict[str, Any] | None
) -> dict[str, Any]:
    try:
        return await catalogue.validate(task_type, params)
    except BackendError as exc:
        if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        if not await catalogue.has(task_type):
            raise _unknown_task_type(task_type) from None
        raise ApiError(422, "invalid_params", exc.details or "params do not match the operation.") from None


def _unknown_task_type(task_type: str) -> ApiError:
    return ApiError(422, "unknown_task_type", f"Unknown task_type '{task_type[:64]}'; see GET /operations.")


# A refused upload's objects must not stay behind when storage is briefly unreachable.
CLEANUP_RETRY_SECONDS = 600.0
_background_cleanups: set[asyncio.Task[None]] = set()


async def _cleanup(backends: BackendsDep, prefix: str) -> None:
    """Remove everything stored under the job's prefix; shielded so that it still completes when the
    request is cancelled (the client went away), and retried in the background if storage fails."""
    try:
        await asyncio.shield(backends.storage.delete_prefix(prefix))
    except Exception as exc:
        log.warning("could not remove %s after a failed upload (%s); retrying in the background", prefix, exc)
        task = asyncio.get_running_loop().create_task(_retry_cleanup(backends, prefix))
        _background_cleanups.add(task)
        task.add_done_callback(_background_cleanups.discard)


async def _retry_cleanup(backends: BackendsDep, prefix: str, delay: float = 0.5) -> None:
    deadline = time.monotonic() + CLEANUP_RETRY_SECONDS
    while time.monotonic() < deadline:
        await asyncio.sleep(delay)
        try:
            await backends.storage.delete_prefix(prefix)
            log.info("removed %s of a failed upload", prefix)
            return
        except Exception:
            delay = min(delay * 2, 30.0)
    log.error("gave up removing %s: objects of a refused upload remain in storage", prefix)


_UPLOAD_ERRORS = error_responses(
    400,
    401,
    408,
    413,
    415,
    422,
    503,
    e400="Not a well-formed multipart/form-data upload (`expected_multipart`, `malformed_multipart`, "
    "`duplicate_field`), no file (`no_files`) or a malformed X-User-ID (`invalid_user_id`).",
    e408="The client stopped sending the upload (`upload_stalled`); nothing is stored.",
    e413="Over a configured limit (`file_too_large`, `job_too_large`, `too_many_files`, "
    "`field_too_large`); nothing is stored.",
    e415="A file is not PNG, JPEG, DICOM, NIfTI or a ZIP of DICOM (`unsupported_file`), decided from its "
    "content; the detail names it. Nothing is stored.",
    e422="Unknown `task_type` (`unknown_task_type`) or params that fail its schema (`invalid_params`); "
    "nothing is stored.",
)


@router.post(
    "",
    status_code=202,
    openapi_extra=_UPLOAD_BODY,
    summary="Upload files and start a job",
    responses=_UPLOAD_ERRORS,
)
async def create_job(
    request: Request,
    user: CurrentUser,
    settings: SettingsDep,
    backends: BackendsDep,
    catalogue: CatalogueDep,
) -> JSONResponse:
    boundary = _boundary(request)
    _check_content_length(request, settings.max_job_bytes)
    job_id = str(uuid.uuid4())
    log_ctx.job_id.set(job_id)

    async def check_task_type(name: str) -> None:
        if not await catalogue.has(name):
            raise _unknown_task_type(name)

    receiver = UploadReceiver(
        backends=backends,
        settings=settings,
        user_id=user,
        job_id=job_id,
        boundary=boundary,
        on_task_type=check_task_type,
    )
    created = False
    try:
        stream = BodyStream(request)
        form = await receiver.receive(stream)
        await stream.finish(settings.upload_idle_timeout_seconds)  # nothing left unread (framing.py)
        if not form.files:
            raise ApiError(400, "no_files", "Attach at least one file in the 'files' field.")
        task_type = form.task_type or DEFAULT_TASK_TYPE
        params = await _validate_params(catalogue, task_type, form.params)
        request_msg = jobs_pb2.CreateJobRequest(
            job_id=job_id,
            user_id=user,
            task_type=task_type,
            params=to_struct(params),
            inputs=[
                jobs_pb2.JobInput(filename=f.filename, key=f.key, format=f.format, size=f.size)
                for f in form.files
            ],
        )
        try:
            job = await backends.call("jobs", "CreateJob", request_msg)
        except BackendError as exc:
            if exc.code in UNREACHABLE:
                # The job may exist anyway; remove it so its inputs do not dangle half-owned.
                try:
                    await backends.call(
                        "jobs", "DeleteJob", jobs_pb2.DeleteJobRequest(user_id=user, job_id=job_id)
                    )
                except BackendError:
                    pass
            raise
        created = True
    finally:
        if not created:
            receiver.abort()
            if receiver.touched_storage:
                await _cleanup(backends, receiver.prefix)

    log.info("job created with %d files", len(job.tasks))
    body = {
        "job_id": job.job_id,
        "user_id": job.user_id,
        "status": status_name(job.status) if job.status else "PENDING",
        "task_ids": [t.task_id for t in job.tasks],
        "created_at": iso(job.created_at, job.HasField("created_at")),
    }
    return JSONResponse(body, status_code=202, headers={"Location": f"/jobs/{job.job_id}"})


@router.get(
    "",
    summary="The caller's jobs, newest first",
    responses=error_responses(
        400,
        401,
        422,
        503,
        e422="Invalid `status`, `limit` or `cursor` (`invalid_parameters`).",
    ),
)
async def list_jobs(
    user: CurrentUser,
    backends: BackendsDep,
    signer: SignerDep,
    status: Annotated[str | None, Query(description=f"One of {', '.join(STATUS_NAMES)}")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> dict[str, Any]:
    status_enum = common_pb2.STATUS_UNSPECIFIED
    if status:
        if status.upper() not in STATUS_NAMES:
            raise ApiError(422, "invalid_parameters", f"status must be one of {', '.join(STATUS_NAMES)}.")
        status_enum = status_value(status.upper())
    try:
        resp = await backends.call(
            "jobs",
            "ListJobs",
            jobs_pb2.ListJobsRequest(user_id=user, status=status_enum, limit=limit, cursor=cursor or ""),
        )
    except BackendError as exc:
        # Mostly a cursor that the jobs service never issued (or a garbled one): a bad query
        # parameter like any other, not a 400.
        if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        detail = (
            "cursor is not valid: pass the next_cursor of a previous page, or none for the first page."
            if "cursor" in exc.details.lower() or not exc.details
            else f"Invalid parameters: {exc.details}"
        )
        raise ApiError(422, "invalid_parameters", detail) from None
    return {"jobs": [job_json(j, signer) for j in resp.jobs], "next_cursor": resp.next_cursor or None}


async def _get_job(backends: BackendsDep, user: str, job_id: str) -> common_pb2.Job:
    with backend_errors("jobs", missing_is_404=True):
        return await backends.call("jobs", "GetJob", jobs_pb2.GetJobRequest(user_id=user, job_id=job_id))


# Every route on one job: its owner sees it, anyone else gets the 404 of a job that does not exist.
_JOB_ERRORS = error_responses(400, 401, 404, 503)


@router.get("/{job_id}", summary="One job with its tasks and results", responses=_JOB_ERRORS)
async def get_job(
    job_id: JobId, user: CurrentUser, backends: BackendsDep, signer: SignerDep
) -> dict[str, Any]:
    log_ctx.job_id.set(job_id)
    return job_json(await _get_job(backends, user, job_id), signer)


def _sse(job: common_pb2.Job, signer: SignerDep) -> bytes:
    return f"event: job\ndata: {json.dumps(job_json(job, signer), separators=(',', ':'))}\n\n".encode()


@router.get(
    "/{job_id}/events",
    summary="Server-Sent Events: the job at once and on every change",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **_JOB_ERRORS},
)
async def job_events(
    job_id: JobId, user: CurrentUser, backends: BackendsDep, signer: SignerDep
) -> StreamingResponse:
    log_ctx.job_id.set(job_id)
    call = backends.jobs.WatchJob(
        jobs_pb2.WatchJobRequest(user_id=user, job_id=job_id), metadata=call_metadata()
    )
    # Wait for the first message before answering, so that 404/503 are proper JSON errors.
    with backend_errors("jobs", missing_is_404=True):
        try:
            first = await asyncio.wait_for(call.read(), backends.timeout)
        except TimeoutError:
            call.cancel()
            raise BackendError("jobs", grpc.StatusCode.DEADLINE_EXCEEDED, "no answer") from None
    if first is grpc.aio.EOF:
        raise not_found()

    async def stream() -> AsyncIterator[bytes]:
        queue: asyncio.Queue[common_pb2.Job | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                while (job := await call.read()) is not grpc.aio.EOF:
                    await queue.put(job)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    log.warning("job watch ended: %s %s", exc.code().name, exc.details())
            finally:
                await queue.put(None)

        reader = asyncio.create_task(pump())
        try:
            yield _sse(first, signer)
            if first.status in TERMINAL:
                return
            while True:
                try:
                    job = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if job is None:
                    return
                yield _sse(job, signer)
                if job.status in TERMINAL:
                    return
        finally:
            # Client gone or job finished: stop the gRPC stream at once.
            call.cancel()
            reader.cancel()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/{job_id}/cancel", summary="Cancel the unfinished tasks of a job", responses=_JOB_ERRORS)
async def cancel_job(
    job_id: JobId, user: CurrentUser, backends: BackendsDep, signer: SignerDep
) -> dict[str, Any]:
    log_ctx.job_id.set(job_id)
    with backend_errors("jobs", missing_is_404=True):
        job = await backends.call("jobs", "CancelJob", jobs_pb2.CancelJobRequest(user_id=user, job_id=job_id))
    return job_json(job, signer)


@router.delete("/{job_id}", status_code=204, summary="Delete a job and its files", responses=_JOB_ERRORS)
async def delete_job(job_id: JobId, user: CurrentUser, backends: BackendsDep) -> Response:
    log_ctx.job_id.set(job_id)
    with backend_errors("jobs", missing_is_404=True):
        await backends.call("jobs", "DeleteJob", jobs_pb2.DeleteJobRequest(user_id=user, job_id=job_id))
    return Response(status_code=204)
