"""Streaming multipart/form-data receiver for POST /jobs.

The body is parsed as it arrives (python-multipart's push parser); each `files` part is sniffed from
its first bytes and streamed to StorageService.Put through a small bounded queue, so a slow storage
slows the reading of the request instead of growing memory. Nothing is buffered beyond
SNIFF_BYTES + the queue (a few MiB), whatever the upload size.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from services.common.config import Settings
from services.common.keys import job_prefix, object_key, safe_filename, unique_filename
from services.common.sniff import ACCEPTED, MEDIA_TYPES, SNIFF_BYTES, sniff
from services.common.storage_client import ObjectWriter, StorageClient
from services.gateway.errors import (
    DUPLICATE_FIELD,
    FIELD_TOO_LARGE,
    FILE_TOO_LARGE,
    INVALID_PARAMS,
    JOB_TOO_LARGE,
    MALFORMED_MULTIPART,
    STORAGE_QUOTA_EXCEEDED,
    TOO_MANY_FILES,
    UNSUPPORTED_FILE,
    UPLOAD_STALLED,
    ApiError,
    rpc_errors,
)

log = logging.getLogger(__name__)

MAX_FIELD_BYTES = 64 * 1024  # task_type / params


def _printable(raw: str) -> str:
    """A client name as it can be quoted in an error message."""
    text = "".join(c for c in raw if unicodedata.category(c) != "Cc")[:200]
    return text or "(unnamed)"


@dataclass
class StoredFile:
    filename: str
    key: str
    format: str
    size: int


@dataclass
class _Part:
    kind: str  # "file", "field" or "skip"
    name: str = ""
    raw_filename: str = ""
    filename: str = ""
    head: bytearray = field(default_factory=bytearray)
    size: int = 0
    writer: ObjectWriter | None = None
    format: str = ""


@contextmanager
def _put_errors(part: _Part) -> Iterator[None]:
    """Storage errors while storing `part`, as what they mean to the client, naming the file."""
    with rpc_errors("storage", "Put", subject=f"'{_printable(part.raw_filename)}'"):
        yield


@dataclass
class UploadForm:
    files: list[StoredFile] = field(default_factory=list)
    task_type: str | None = None
    params: dict[str, Any] | None = None


# Operation params are flat settings; deep nesting only serves to exhaust parsers.
MAX_PARAMS_DEPTH = 8


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


class Preamble:
    """Drops what comes before the first boundary line: RFC 2046 (5.1.1) says a preamble is to be
    ignored, and python-multipart refuses one."""

    LIMIT = 64 * 1024

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"--" + boundary
        self._held = bytearray()
        self._found = False

    def skip(self, chunk: bytes) -> bytes:
        if self._found:
            return chunk
        self._held += chunk
        start = 0 if self._held.startswith(self._delimiter) else self._held.find(b"\r\n" + self._delimiter)
        if start < 0:
            if len(self._held) > self.LIMIT:
                raise ApiError(MALFORMED_MULTIPART,
                               f"No multipart boundary in the first {self.LIMIT // 1024} KiB of the body.")
            return b""
        self._found = True
        rest = bytes(self._held[start:])
        self._held.clear()
        return rest


def parse_params(text: str) -> dict[str, Any]:
    """The `params` form field as a JSON object of finite values, or 422 invalid_params."""
    try:
        params = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except (ValueError, RecursionError) as exc:
        detail = exc if isinstance(exc, ValueError) else "nested too deeply"
        raise ApiError(INVALID_PARAMS, f"params is not valid JSON: {detail}") from None
    if not isinstance(params, dict):
        raise ApiError(INVALID_PARAMS, 'params must be a JSON object, e.g. {"sigma": 2}.')
    _check_values(params, 1)
    return params


def _parse_int(digits: str) -> int:
    # Python's own refusal of a 5000-digit number would tell the user about sys.set_int_max_str_digits.
    if len(digits.lstrip("-")) > 30:
        raise ValueError(f"the number {digits[:12]}... has {len(digits)} digits; numbers here are short")
    return int(digits)


def _check_values(value: Any, depth: int) -> None:
    if depth > MAX_PARAMS_DEPTH:
        raise ApiError(INVALID_PARAMS, f"params is nested more than {MAX_PARAMS_DEPTH} levels deep.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(INVALID_PARAMS, "params contains a number too large to represent.")
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        _check_values(child, depth + 1)


async def _idle_timeout(body: AsyncIterator[bytes], seconds: float) -> AsyncIterator[bytes]:
    """The body's chunks, or 408 when the client stops sending (a stalled upload would otherwise
    hold a storage stream open for as long as the connection lives)."""
    chunks = aiter(body)
    while True:
        try:
            chunk = await asyncio.wait_for(anext(chunks), seconds)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise ApiError(
                UPLOAD_STALLED, f"The upload sent nothing for {seconds:g} seconds and was dropped."
            ) from None
        yield chunk


def quota_exceeded(left: int) -> ApiError:
    return ApiError(
        STORAGE_QUOTA_EXCEEDED,
        f"The upload exceeds your storage quota: {left} bytes are left. Delete jobs you no longer need "
        "(GET /usage shows your usage).",
    )


class UploadReceiver:
    """Receives one POST /jobs body for `user_id`/`job_id` into storage. Call `receive`, and on any
    failure `abort` (then remove `prefix` if `touched_storage`)."""

    def __init__(
        self,
        *,
        storage: StorageClient,
        settings: Settings,
        user_id: str,
        job_id: str,
        boundary: bytes,
        on_task_type: Callable[[str], Awaitable[None]] | None = None,
        quota_bytes: int = -1,
    ) -> None:
        # What the user's storage quota leaves for this upload (-1: no quota), counted as it streams.
        self._quota_bytes = quota_bytes
        self._storage = storage
        self._settings = settings
        self._user_id, self._job_id = user_id, job_id
        self.prefix = job_prefix(user_id, job_id)
        self._boundary = boundary
        self._on_task_type = on_task_type
        self.form = UploadForm()
        self.touched_storage = False  # a Put was started: a failed upload must remove the prefix
        self._taken: set[str] = set()
        self._job_bytes = 0
        self._files_seen = 0
        self._fields_seen: set[str] = set()
        self._part: _Part | None = None
        self._events: list[tuple[str, Any]] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._hfield = bytearray()
        self._hvalue = bytearray()
        self._finished = False

    # --- synchronous parser callbacks: only record events, handled asynchronously after each write ---
    def _parser(self) -> MultipartParser:
        def on_part_begin() -> None:
            self._headers = []

        def on_header_field(data: bytes, start: int, end: int) -> None:
            self._hfield += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            self._hvalue += data[start:end]

        def on_header_end() -> None:
            self._headers.append((bytes(self._hfield).lower(), bytes(self._hvalue)))
            self._hfield.clear()
            self._hvalue.clear()

        def on_headers_finished() -> None:
            self._events.append(("part", dict(self._headers)))

        def on_part_data(data: bytes, start: int, end: int) -> None:
            self._events.append(("data", data[start:end]))

        def on_part_end() -> None:
            self._events.append(("end", None))

        def on_end() -> None:
            self._finished = True

        return MultipartParser(
            self._boundary,
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
                "on_end": on_end,
            },
        )

    async def receive(self, body: AsyncIterator[bytes]) -> UploadForm:
        malformed = ApiError(MALFORMED_MULTIPART)
        try:
            parser = self._parser()
        except FormParserError:
            raise malformed from None
        preamble = Preamble(self._boundary)
        async for received in _idle_timeout(body, self._settings.upload_idle_timeout_seconds):
            chunk = preamble.skip(received)
            if not chunk:
                continue
            try:
                parser.write(chunk)
            except FormParserError:
                raise malformed from None
            events, self._events = self._events, []
            for kind, value in events:
                if kind == "part":
                    await self._begin(value)
                elif kind == "data":
                    await self._data(value)
                else:
                    await self._end()
            if self._finished:
                break
        if not self._finished:
            raise ApiError(MALFORMED_MULTIPART, "The multipart/form-data body ended early.")
        return self.form

    async def _begin(self, headers: dict[bytes, bytes]) -> None:
        disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if disposition != b"form-data":
            self._part = _Part("skip")
        elif name == "files":
            self._files_seen += 1
            if self._files_seen > self._settings.max_files_per_job:
                raise ApiError(TOO_MANY_FILES, f"At most {self._settings.max_files_per_job} files per job.")
            raw = options.get(b"filename", b"").decode("utf-8", "replace")
            filename = unique_filename(safe_filename(raw), self._taken)
            self._taken.add(filename.lower())
            self._part = _Part("file", name=name, raw_filename=raw or filename, filename=filename)
        elif name in ("task_type", "params"):
            if name in self._fields_seen:
                raise ApiError(DUPLICATE_FIELD, f"The form field '{name}' was sent more than once.")
            self._fields_seen.add(name)
            self._part = _Part("field", name=name)
        else:
            self._part = _Part("skip")

    async def _data(self, data: bytes) -> None:
        part = self._part
        if part is None or part.kind == "skip":
            return
        if part.kind == "field":
            part.head += data
            if len(part.head) > MAX_FIELD_BYTES:
                raise ApiError(FIELD_TOO_LARGE, f"The form field '{part.name}' is too long.")
            return
        part.size += len(data)
        self._job_bytes += len(data)
        if part.size > self._settings.max_file_bytes:
            raise ApiError(
                FILE_TOO_LARGE,
                f"'{_printable(part.raw_filename)}' is larger than the limit of "
                f"{self._settings.max_file_bytes} bytes per file.",
            )
        if self._job_bytes > self._settings.max_job_bytes:
            raise ApiError(
                JOB_TOO_LARGE, f"The files exceed the limit of {self._settings.max_job_bytes} bytes per job."
            )
        if 0 <= self._quota_bytes < self._job_bytes:
            raise quota_exceeded(self._quota_bytes)
        if part.writer is None:
            part.head += data
            if len(part.head) >= SNIFF_BYTES:
                await self._start_file(part)
        else:
            with _put_errors(part):
                await part.writer.write(data)

    async def _start_file(self, part: _Part) -> None:
        fmt = sniff(bytes(part.head[:SNIFF_BYTES]))
        if fmt is None:
            what = "is empty" if not part.head else "is not a supported image"
            raise ApiError(
                UNSUPPORTED_FILE,
                f"'{_printable(part.raw_filename)}' {what}: accepted are {ACCEPTED} (decided from content).",
            )
        part.format = fmt
        self.touched_storage = True
        key = object_key(self._user_id, self._job_id, part.filename)
        part.writer = self._storage.writer(key, MEDIA_TYPES[fmt], self._settings.max_file_bytes)
        head, part.head = bytes(part.head), bytearray()
        with _put_errors(part):
            await part.writer.write(head)

    async def _end(self) -> None:
        part, self._part = self._part, None
        if part is None or part.kind == "skip":
            return
        if part.kind == "field":
            await self._field(part.name, bytes(part.head))
            return
        if part.writer is None:
            await self._start_file(part)
        assert part.writer is not None
        with _put_errors(part):
            info = await part.writer.close()
        part.writer = None
        self.form.files.append(
            StoredFile(
                filename=part.filename, key=object_key(self._user_id, self._job_id, part.filename),
                format=part.format, size=info.size,
            )
        )

    async def _field(self, name: str, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(INVALID_PARAMS, f"The form field '{name}' is not UTF-8 text.") from None
        if name == "task_type":
            self.form.task_type = text.strip() or None
            if self.form.task_type and self._on_task_type:
                await self._on_task_type(self.form.task_type)  # refuse an unknown op before storing
            return
        if not text.strip():
            self.form.params = None
            return
        self.form.params = parse_params(text)

    def abort(self) -> None:
        if self._part is not None and self._part.writer is not None:
            self._part.writer.abort()
