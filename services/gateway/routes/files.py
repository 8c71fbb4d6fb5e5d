"""Inputs and outputs of a job, streamed from storage, for the owner or a signed URL."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from services.common.gen.radiology.v1 import storage_pb2
from services.common.keys import object_key
from services.common.storage_client import ObjectReader
from services.gateway.deps import OPTIONAL_IDENTITY_ERRORS, BackendsDep, FileCallerDep, SignerDep
from services.gateway.errors import (
    BACKEND_ERROR,
    NOT_FOUND,
    RANGE_NOT_SATISFIABLE,
    SERVICE_UNAVAILABLE,
    ApiError,
    error_responses,
    rpc_errors,
)
from services.gateway.text import ascii_digits

router = APIRouter(prefix="/files", tags=["files"])


def _range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range; None to ignore the header (malformed or multi-range,
    which RFC 9110 allows answering with the whole file); raises 416 when it cannot be satisfied."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash or not (ascii_digits(first_text) or ascii_digits(last_text)):
        return None
    if first_text and last_text and not (ascii_digits(first_text) and ascii_digits(last_text)):
        return None
    unsatisfiable = ApiError(
        RANGE_NOT_SATISFIABLE, f"The file has {size} bytes.", {"Content-Range": f"bytes */{size}"}
    )
    if not first_text:  # suffix: the last n bytes
        n = int(last_text)
        if n == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - n), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        raise unsatisfiable
    return first, min(last, size - 1)


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _headers(info: storage_pb2.ObjectInfo, filename: str) -> dict[str, str]:
    headers = {
        "Accept-Ranges": "bytes",
        "Cache-Control": "private",
        "Content-Disposition": f'inline; filename="{filename}"',
    }
    if info.etag:
        headers["ETag"] = f'"{info.etag}"'
    return headers


async def _open(
    backends: BackendsDep, key: str, offset: int = 0, length: int = 0
) -> tuple[storage_pb2.ObjectInfo, ObjectReader]:
    """Starts Get and reads the object's info, so that errors still become JSON responses."""
    with rpc_errors("storage", "Get"):
        return await backends.storage.open(key, offset, length)


_ANY_BYTES = {"*/*": {"schema": {"type": "string", "format": "binary"}}}


@router.get(
    "/{user_id}/{job_id}/{filename}",
    summary="Download a job's file",
    description="Served to its owner, or with the signed `token` of a URL the API returned; anyone "
    "else gets the 404 of a file that does not exist.",
    response_class=StreamingResponse,
    responses={
        # The file's own media type (image/png, application/gzip, application/dicom, ...).
        200: {"description": "The file", "content": _ANY_BYTES},
        206: {"description": "The requested byte range (Range)", "content": _ANY_BYTES},
        304: {"description": "Not modified (If-None-Match matches the ETag)"},
        **error_responses(
            *OPTIONAL_IDENTITY_ERRORS, NOT_FOUND, RANGE_NOT_SATISFIABLE, BACKEND_ERROR, SERVICE_UNAVAILABLE
        ),
    },
)
@router.head("/{user_id}/{job_id}/{filename}", include_in_schema=False)
async def get_file(
    request: Request,
    user_id: str,
    job_id: str,
    filename: str,
    caller: FileCallerDep,
    backends: BackendsDep,
    signer: SignerDep,
    token: Annotated[
        str | None, Query(description="Signed token from a URL the API returned")
    ] = None,
) -> Response:
    try:
        key = object_key(user_id, job_id, filename)
    except ValueError:  # no file of the platform has such a key
        raise ApiError(NOT_FOUND) from None
    signed = token is not None and signer.verify(user_id, job_id, filename, token)
    if not (caller.user == user_id or signed):
        raise caller.error or ApiError(NOT_FOUND)

    # Range is defined for GET only (RFC 9110 14.2); HEAD describes the whole file.
    range_header = request.headers.get("range") if request.method == "GET" else None
    if_range = request.headers.get("if-range")
    if_none_match = request.headers.get("if-none-match")

    if request.method == "HEAD" or range_header:
        with rpc_errors("storage", "Stat"):
            info = await backends.storage.stat(key)
    else:
        info, body = await _open(backends, key)
    headers = _headers(info, filename)
    media_type = info.content_type or "application/octet-stream"

    if if_none_match and info.etag and _etag_matches(if_none_match, f'"{info.etag}"'):
        if request.method == "GET" and not range_header:
            body.cancel()
        return Response(status_code=304, headers=headers)

    span = None
    if range_header and (not if_range or if_range.strip() == headers.get("ETag")):
        span = _range(range_header, info.size)

    if request.method == "HEAD":
        headers["Content-Length"] = str(info.size)
        return Response(status_code=200, headers=headers, media_type=media_type)

    status = 200
    if span is not None:
        first, last = span
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{info.size}"
        headers["Content-Length"] = str(last - first + 1)
        _, body = await _open(backends, key, first, last - first + 1)
    else:
        if range_header:  # Stat'ed for a range we ended up ignoring: open the whole object now
            info, body = await _open(backends, key)
        headers["Content-Length"] = str(info.size)
    return StreamingResponse(body, status_code=status, headers=headers, media_type=media_type)
