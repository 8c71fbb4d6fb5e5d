"""Every error the gateway sends, in one place: the codes, what a backing service's gRPC status
means to an HTTP client, the one exception (ApiError) and the handlers that answer with it.

Every error body is {"detail": "<human message>", "code": "<stable_snake_case>"}. A code has one
HTTP status; ApiError is built from a registered code only, so the OpenAPI document (built from the
same registry by `error_responses`) lists exactly the codes that are sent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from services.common.gen.radiology.v1 import jobs_pb2
from services.common.identity import IDEMPOTENCY_KEY_RULE
from services.common.refusals import limit_exceeded
from services.gateway.allow import allow_header, allowed_methods
from services.gateway.asgi import HttpMiddleware, ResponseStart

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorCode:
    status: int
    code: str
    doc: str  # when it is sent, for the OpenAPI document
    detail: str = ""  # the message when the raiser gives none
    headers: Mapping[str, str] = field(default_factory=dict)  # sent with every such error
    header_docs: Mapping[str, str] = field(default_factory=dict)  # documented; values set per error


CODES: dict[str, ErrorCode] = {}


def _register(status: int, code: str, doc: str, detail: str = "", **extra: Mapping[str, str]) -> ErrorCode:
    if code in CODES:
        raise ValueError(f"error code {code!r} registered twice")
    CODES[code] = ErrorCode(status, code, doc, detail, **extra)
    return CODES[code]


# A new code is one more line here; the routes that can send it list it in `error_responses`.
INVALID_USER_ID = _register(400, "invalid_user_id", "a malformed X-User-ID header")
INVALID_IDEMPOTENCY_KEY = _register(
    400, "invalid_idempotency_key",
    f"the Idempotency-Key header is sent more than once, or is not {IDEMPOTENCY_KEY_RULE}",
)
EXPECTED_MULTIPART = _register(400, "expected_multipart", "the body is not multipart/form-data")
MALFORMED_MULTIPART = _register(
    400, "malformed_multipart", "the multipart/form-data body is malformed",
    "The multipart/form-data body is malformed.",
)
DUPLICATE_FIELD = _register(400, "duplicate_field", "`task_type` or `params` sent more than once")
NO_FILES = _register(
    400, "no_files", "no file in the `files` field", "Attach at least one file in the 'files' field."
)
INCOMPLETE_BODY = _register(
    400, "incomplete_body", "the body ended before its Content-Length (or went on past the form)"
)
CLIENT_DISCONNECTED = _register(
    400, "client_disconnected", "the client closed the connection mid-upload (only logs and metrics see it)",
    "The client closed the connection.",
)
MISSING_IDENTITY = _register(
    401, "missing_identity", "no X-User-ID header (auth mode header) or no Bearer token (auth mode jwt)",
    "Identify yourself with the X-User-ID header.",
    header_docs={"WWW-Authenticate": "jwt mode: `Bearer realm=...`"},
)
INVALID_TOKEN = _register(
    401, "invalid_token",
    "auth mode jwt: the Bearer token is malformed, expired, not yet valid, badly signed, or for another "
    "audience or issuer; the detail says which",
    header_docs={"WWW-Authenticate": '`Bearer realm=..., error="invalid_token", error_description=...`'},
)
# One body for every kind of missing resource: another user's job must look exactly like none at all.
NOT_FOUND = _register(
    404, "not_found", "not found, or not the caller's: the two are indistinguishable", "Not found"
)
METHOD_NOT_ALLOWED = _register(
    405, "method_not_allowed", "the path does not answer this method", "Method Not Allowed",
    header_docs={"Allow": "The methods the path answers"},
)
UPLOAD_STALLED = _register(408, "upload_stalled", "the client stopped sending the upload")
CONFLICT = _register(
    409, "conflict", "a backing service found the request in conflict with what it holds (a job id taken)",
    "The request conflicts with the current state.",
)
FILE_TOO_LARGE = _register(413, "file_too_large", "a file is over the size limit per file")
JOB_TOO_LARGE = _register(413, "job_too_large", "the files are over the size limit per job")
TOO_MANY_FILES = _register(413, "too_many_files", "more files than the limit per job")
FIELD_TOO_LARGE = _register(413, "field_too_large", "`task_type` or `params` is over 64 KiB")
TOO_LARGE = _register(
    413, "too_large", "a backing service refused the request as too large", "The request is too large."
)
STORAGE_QUOTA_EXCEEDED = _register(
    413, "storage_quota_exceeded",
    "the upload would take the caller's stored bytes (inputs and outputs of their jobs) over their "
    "quota; nothing of it is kept (GET /usage shows the quota; deleting jobs frees space)",
)
UNSUPPORTED_FILE = _register(
    415, "unsupported_file",
    "a file is not PNG, JPEG, DICOM, NIfTI or a ZIP of DICOM, decided from its content; the detail names it",
)
RANGE_NOT_SATISFIABLE = _register(
    416, "range_not_satisfiable", "the Range starts beyond the end of the file",
    header_docs={"Content-Range": "`bytes */<size>`"},
)
INVALID_PARAMETERS = _register(
    422, "invalid_parameters", "a parameter of the request is not valid; the detail says which",
    "Invalid parameters.",
)
INVALID_PARAMS = _register(
    422, "invalid_params", "`params` is not a JSON object or fails the operation's schema",
    "params do not match the operation.",
)
INPUT_NOT_ACCEPTED = _register(
    422, "input_not_accepted",
    "a file's format, or the kind of image it holds (a 2D image, a 3D volume, read from a DICOM "
    "file's headers), is not one the operation accepts (`accepts` in GET /operations); the detail "
    "names the file",
)
UNKNOWN_TASK_TYPE = _register(422, "unknown_task_type", "`task_type` is not an operation of GET /operations")
_RETRY_AFTER = {"Retry-After": "Seconds to wait before retrying"}
RATE_LIMITED = _register(
    429, "rate_limited", "the caller submitted more jobs a minute than allowed (GET /usage shows the rate)",
    header_docs=_RETRY_AFTER,
)
TOO_MANY_ACTIVE_JOBS = _register(
    429, "too_many_active_jobs", "the caller has their maximum of jobs PENDING or RUNNING at once",
    header_docs=_RETRY_AFTER,
)
INTERNAL_ERROR = _register(
    500, "internal_error", "a fault of the gateway's own, logged with its details",
    "Something went wrong on our side; it has been logged.",
)
BACKEND_ERROR = _register(502, "backend_error", "a backing service failed in an unexpected way (logged)")
SERVICE_UNAVAILABLE = _register(
    503, "service_unavailable", "a backing service is not reachable; retry after Retry-After seconds",
    headers={"Retry-After": "1"}, header_docs=_RETRY_AFTER,
)
NOT_READY = _register(503, "not_ready", "a backing service is not serving; the detail names it")
OUTCOME_UNKNOWN = _register(
    503, "outcome_unknown",
    "the jobs service failed while it may have recorded the job, and did not answer whether it did; "
    "the uploaded files are kept. Retry with the same Idempotency-Key: it returns the job if it exists, "
    "else creates it once",
    headers={"Retry-After": "2"}, header_docs=_RETRY_AFTER,
)


class ApiError(Exception):
    """The one exception the gateway answers with: a registered code, a message for the client and,
    where the code calls for them, header values (Content-Range of a 416)."""

    def __init__(self, error: ErrorCode, detail: str = "", headers: Mapping[str, str] | None = None) -> None:
        if CODES.get(error.code) is not error:
            raise ValueError(f"unregistered error code {error.code!r}")
        self.error = error
        self.detail = detail or error.detail or HTTPStatus(error.status).phrase
        self.headers = {**error.headers, **(headers or {})}
        super().__init__(f"{error.code}: {self.detail}")

    @property
    def status(self) -> int:
        return self.error.status

    @property
    def code(self) -> str:
        return self.error.code

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail, "code": self.code}, status_code=self.status,
                            headers=self.headers or None)


# --- what a backing service's gRPC status means to an HTTP client ---------------------------------

@dataclass(frozen=True)
class Meaning:
    error: ErrorCode
    # None: the service's own message (services write them for users). May use {service}, {subject}.
    detail: str | None = None


_UNREACHABLE = Meaning(
    SERVICE_UNAVAILABLE, "The {service} service is not reachable right now; please retry shortly."
)
_MISSING = Meaning(NOT_FOUND, NOT_FOUND.detail)
_CONFLICT = Meaning(CONFLICT)
_FAILED = Meaning(BACKEND_ERROR, "The {service} service could not handle the request.")

# One HTTP status per gRPC status, whichever service and call answered it.
FROM_GRPC: dict[grpc.StatusCode, Meaning] = {
    grpc.StatusCode.UNAVAILABLE: _UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: _UNREACHABLE,  # down or stuck: worth a retry
    grpc.StatusCode.NOT_FOUND: _MISSING,
    grpc.StatusCode.PERMISSION_DENIED: _MISSING,
    grpc.StatusCode.INVALID_ARGUMENT: Meaning(INVALID_PARAMETERS),
    grpc.StatusCode.RESOURCE_EXHAUSTED: Meaning(TOO_LARGE),
    grpc.StatusCode.ALREADY_EXISTS: _CONFLICT,
    grpc.StatusCode.FAILED_PRECONDITION: _CONFLICT,
}

# Where one call's answer says more, its own code and words: (service, method, gRPC status).
FROM_RPC: dict[tuple[str, str, grpc.StatusCode], Meaning] = {
    ("processor", "ValidateParams", grpc.StatusCode.INVALID_ARGUMENT): Meaning(INVALID_PARAMS),
    # The gateway checks limit and status itself: what is left is a cursor it did not issue.
    ("jobs", "ListJobs", grpc.StatusCode.INVALID_ARGUMENT): Meaning(
        INVALID_PARAMETERS,
        "cursor is not valid: pass the next_cursor of a previous page, or none for the first page.",
    ),
    ("storage", "Put", grpc.StatusCode.RESOURCE_EXHAUSTED): Meaning(
        FILE_TOO_LARGE, "{subject} is larger than storage accepts."
    ),
}

for (_service, _method, _grpc_code), _meaning in FROM_RPC.items():
    _status = FROM_GRPC[_grpc_code].error.status
    if _meaning.error.status != _status:
        raise ValueError(f"{_service}.{_method}: {_grpc_code.name} must stay HTTP {_status}")

# A refusal for a user's limit names the limit explicitly (services/common/refusals.py): its own
# code, whichever gRPC status it came with; the rule above is for everything else.
FROM_LIMIT: dict[int, ErrorCode] = {
    jobs_pb2.LimitExceeded.LIMIT_SUBMISSION_RATE: RATE_LIMITED,
    jobs_pb2.LimitExceeded.LIMIT_ACTIVE_JOBS: TOO_MANY_ACTIVE_JOBS,
    jobs_pb2.LimitExceeded.LIMIT_STORED_BYTES: STORAGE_QUOTA_EXCEEDED,
}


def limit_error(refusal: jobs_pb2.LimitExceeded, details: str) -> ApiError:
    """The ApiError of a limit refusal: the service's words, and when to retry (whole seconds)."""
    error = FROM_LIMIT[refusal.limit]
    headers = {}
    if "Retry-After" in error.header_docs:
        headers["Retry-After"] = str(max(1, math.ceil(refusal.retry_after_seconds)))
    detail = details[:1].upper() + details[1:] + ("." if details and not details.endswith(".") else "")
    return ApiError(error, detail, headers)


def from_grpc(
    service: str, method: str, code: grpc.StatusCode, details: str, subject: str = "The file",
    trailing_metadata: Any = None,
) -> ApiError:
    """The ApiError that gRPC status `code` of `service`.`method` means; `subject` names what the
    call was about where a message says so (a file of an upload)."""
    refusal = limit_exceeded(trailing_metadata) if code == grpc.StatusCode.RESOURCE_EXHAUSTED else None
    if refusal is not None and refusal.limit in FROM_LIMIT:
        return limit_error(refusal, details)
    meaning = FROM_RPC.get((service, method, code)) or FROM_GRPC.get(code) or _FAILED
    if meaning is _FAILED:
        log.error("%s service failed in %s: %s %s", service, method, code.name, details)
    template = details if meaning.detail is None else meaning.detail.format(service=service, subject=subject)
    return ApiError(meaning.error, template)


@contextmanager
def rpc_errors(service: str, method: str, subject: str = "The file") -> Iterator[None]:
    """A failed call of `service`.`method` inside the block becomes the ApiError it means."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise from_grpc(
            service, method, exc.code(), exc.details() or "", subject, exc.trailing_metadata()
        ) from None


# --- the OpenAPI document -------------------------------------------------------------------------

class Error(BaseModel):
    """The body of every error response: a human message and a stable code."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "Not found", "code": "not_found"}]})

    detail: str = Field(description="A clear human message, fit to show to a user.")
    code: str = Field(description="Stable snake_case code to branch on, e.g. `not_found`, `file_too_large`.")


def error_responses(*errors: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: each status it can answer with, as an Error, naming its codes."""
    by_status: dict[int, list[ErrorCode]] = {}
    for error in errors:
        by_status.setdefault(error.status, []).append(error)
    docs: dict[int | str, dict[str, Any]] = {}
    for status, group in sorted(by_status.items()):
        lines = [HTTPStatus(status).phrase, ""] + [f"- `{e.code}`: {e.doc}" for e in group]
        doc: dict[str, Any] = {"model": Error, "description": "\n".join(lines)}
        headers = {name: text for e in group for name, text in e.header_docs.items()}
        if headers:
            doc["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                              for name, text in headers.items()}
        docs[status] = doc
    return docs


# Sent by the framework on any path: documented once, under components/responses.
ANY_PATH = (METHOD_NOT_ALLOWED,)
# Any operation can fail in the gateway itself.
ANY_OPERATION = (INTERNAL_ERROR,)


# --- answering ------------------------------------------------------------------------------------

def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "header", "body"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "Invalid parameters: " + "; ".join(parts)


# What the framework itself raises: unknown paths (the router, the static UI) and wrong methods.
_FRAMEWORK: dict[int, ErrorCode] = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED}


def _as_api_error(request: Request, exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestValidationError):
        return ApiError(INVALID_PARAMETERS, _validation_detail(exc))
    if isinstance(exc, ClientDisconnect):
        # Not an error of ours, and nobody reads this answer (the upload's files are removed).
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return ApiError(CLIENT_DISCONNECTED)
    if isinstance(exc, StarletteHTTPException) and exc.status_code == 405:
        # Every method of the path, not only those of the first route that matched it.
        methods = allowed_methods(request.app.router, request.scope)
        return ApiError(METHOD_NOT_ALLOWED, headers=allow_header(methods) if methods else exc.headers)
    if isinstance(exc, StarletteHTTPException) and exc.status_code in _FRAMEWORK:
        return ApiError(_FRAMEWORK[exc.status_code], headers=exc.headers)
    raise exc  # to the catch-all below


def install(app: FastAPI) -> None:
    async def answer(request: Request, exc: Exception) -> JSONResponse:
        return _as_api_error(request, exc).response()

    for exc_type in (ApiError, RequestValidationError, ClientDisconnect, StarletteHTTPException):
        app.add_exception_handler(exc_type, answer)


class CatchAllMiddleware(HttpMiddleware):
    """The one safety net, innermost: an unexpected exception becomes a generic 500 JSON (logged
    with its traceback, never sent), while the outer middleware still adds CORS, request id and
    metrics."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = ResponseStart(send)
        try:
            await self.app(scope, receive, start.send)
        except Exception:
            log.exception("unhandled error")
            if start.status is None:
                await ApiError(INTERNAL_ERROR).response()(scope, receive, send)
