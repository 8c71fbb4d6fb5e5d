"""An upload's body must end where its Content-Length says.

The multipart parser stops at the form's closing boundary, so on its own a request announcing
4 GiB that sends a complete 200-byte form would be accepted while the rest of the "body" never
comes. `BodyStream` counts what the form used; `finish` then allows only a short epilogue (some
clients send a CRLF after the closing boundary) and reads it: anything else is a 400, before the
job is created, so nothing of the request stays stored. (Malformed framing itself, such as bare CR
or LF in headers and conflicting Content-Length / Transfer-Encoding, is refused by the HTTP server:
services/gateway/server.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request

from services.gateway.errors import INCOMPLETE_BODY, ApiError
from services.gateway.text import ascii_digits

# Bytes allowed after the closing boundary (RFC 2046 calls them the epilogue; meant to be ignored).
MAX_EPILOGUE_BYTES = 1024


class BodyStream:
    """The request's body chunks, counted."""

    def __init__(self, request: Request) -> None:
        self._chunks: AsyncIterator[bytes] = request.stream()
        length = request.headers.get("content-length")
        self.declared = int(length) if length and ascii_digits(length) else None
        self.received = 0

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await anext(self._chunks)
        self.received += len(chunk)
        return chunk

    def _ended_early(self) -> ApiError:
        announced = f"{self.declared} bytes were announced" if self.declared is not None else "more followed"
        return ApiError(
            INCOMPLETE_BODY,
            f"The request body ended before its Content-Length: the form ended after {self.received} "
            f"bytes but {announced}.",
        )

    async def finish(self, idle_timeout: float) -> None:
        """Call once the form has ended: reads the rest of the body, which must be a short epilogue."""
        if self.declared is not None and self.declared - self.received > MAX_EPILOGUE_BYTES:
            raise self._ended_early()
        extra = 0
        while True:
            try:
                chunk = await asyncio.wait_for(anext(self._chunks), idle_timeout)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise self._ended_early() from None
            extra += len(chunk)
            self.received += len(chunk)
            if extra > MAX_EPILOGUE_BYTES:
                raise self._ended_early()
