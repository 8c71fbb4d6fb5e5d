"""One error shape for the whole API: {"detail": "<human message>", "code": "<stable_snake_case>"}."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.clients import UNREACHABLE, BackendError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raised anywhere in the gateway to answer with a given status, code and message."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


class Error(BaseModel):
    """The body of every error response: a human message and a stable code."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "Not found", "code": "not_found"}]})

    detail: str = Field(description="A clear human message, fit to show to a user.")
    code: str = Field(description="Stable snake_case code to branch on, e.g. `not_found`, `file_too_large`.")


# What each status means in this API, for the OpenAPI document; routes may say more.
_STATUS_DOCS = {
    400: "Bad request: a malformed X-User-ID header (`invalid_user_id`).",
    401: "No identity: send the X-User-ID header (`missing_identity`).",
    404: "Not found, or not the caller's (`not_found`): the two are indistinguishable.",
    408: "The upload stalled (`upload_stalled`).",
    413: "Too large (`too_large`).",
    415: "Unsupported file (`unsupported_file`).",
    416: "The Range cannot be satisfied (`range_not_satisfiable`); Content-Range gives the size.",
    422: "Invalid parameters (`invalid_parameters`).",
    503: "A backing service is not reachable (`service_unavailable`); retry after Retry-After seconds.",
}
_STATUS_HEADERS = {
    416: {"Content-Range": {"description": "`bytes */<size>`", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}},
}


def error_responses(*statuses: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: each status it can answer with, as an Error. Keyword arguments
    `e413="..."` replace the generic description of that status with the route's own."""
    docs: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        doc: dict[str, Any] = {
            "model": Error,
            "description": described.pop(f"e{status}", None) or _STATUS_DOCS[status],
        }
        if status in _STATUS_HEADERS:
            doc["headers"] = _STATUS_HEADERS[status]
        docs[status] = doc
    if described:
        raise TypeError(f"descriptions of statuses not listed: {sorted(described)}")
    return docs


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


# One body for every kind of missing resource: another user's job must look exactly like none at all.
NOT_FOUND_DETAIL = "Not found"


def not_found() -> ApiError:
    return ApiError(404, "not_found", NOT_FOUND_DETAIL)


# What a backend answers for an id it does not have, or one so malformed that it cannot exist.
MISSING = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


@contextmanager
def backend_errors(service: str, *, missing_is_404: bool = False) -> Iterator[None]:
    """gRPC failures of `service` inside the block become BackendError (mapped by the handler below);
    with missing_is_404, a MISSING answer is the plain 404 of anything the caller cannot see."""
    try:
        yield
    except (grpc.aio.AioRpcError, BackendError) as exc:
        error = BackendError.wrap(service, exc) if isinstance(exc, grpc.aio.AioRpcError) else exc
        if missing_is_404 and error.code in MISSING:
            raise not_found() from None
        raise error from None


def backend_error_response(service: str, code: grpc.StatusCode, details: str) -> JSONResponse:
    if code in UNREACHABLE:
        return error_response(
            503,
            "service_unavailable",
            f"The {service} service is not reachable right now; please retry shortly.",
            {"Retry-After": "1"},
        )
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
        return error_response(404, "not_found", NOT_FOUND_DETAIL)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return error_response(400, "invalid_request", details or "The request was not valid.")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return error_response(413, "too_large", details or "The request is too large.")
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS):
        return error_response(409, "conflict", details or "The request conflicts with the current state.")
    log.error("%s service failed: %s %s", service, code.name, details)
    return error_response(502, "backend_error", f"The {service} service could not handle the request.")


_CODES = {
    400: "bad_request",
    401: "missing_identity",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "rate_limited",
}


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "header", "body"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "Invalid parameters: " + "; ".join(parts)


def internal_error_response() -> JSONResponse:
    return error_response(500, "internal_error", "Something went wrong on our side; it has been logged.")


def install(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(404, "not_found", NOT_FOUND_DETAIL)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        code = _CODES.get(exc.status_code, HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_"))
        return error_response(exc.status_code, code, detail, dict(exc.headers or {}))

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "invalid_parameters", _validation_detail(exc))

    async def backend_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BackendError)
        return backend_error_response(exc.service, exc.code, exc.details)

    async def rpc_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, grpc.aio.AioRpcError)
        return backend_error_response("backing", exc.code(), exc.details() or "")

    async def client_gone(request: Request, _: Exception) -> JSONResponse:
        # Not an error of ours: the client closed the connection mid-request (the upload's files are
        # removed by the route). Nobody reads this answer.
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return error_response(400, "client_disconnected", "The client closed the connection.")

    async def unhandled(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return internal_error_response()

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(BackendError, backend_error)
    app.add_exception_handler(grpc.aio.AioRpcError, rpc_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unhandled)


class CatchAllMiddleware:
    """Innermost safety net: an unexpected exception becomes a generic 500 JSON (logged with its
    traceback, never sent), while the outer middleware still adds CORS, request id and metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error")
            if not started:
                await internal_error_response()(scope, receive, send)
