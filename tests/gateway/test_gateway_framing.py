"""HTTP framing, with raw sockets against the gateway served as in production (server.uvicorn_config):
a body that ends before its Content-Length is a 400 and stores nothing; header values with a bare CR
or LF, and conflicting length framing, are refused by the HTTP server itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import uvicorn

from services.common.config import Settings
from services.gateway.app import create_app
from services.gateway.server import uvicorn_config
from tests.conftest import free_port
from tests.gateway.fakes import Fakes
from tests.gateway.helpers import PNG, multipart


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings, host="127.0.0.1", port=port))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes, keep the connection open (no half-close), return the status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(b" ", 2)[1])
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
        return status, body
    finally:
        writer.close()


def post(body: bytes, ctype: str, content_length: int, extra_headers: bytes = b"") -> bytes:
    return (b"POST /jobs HTTP/1.1\r\nHost: gateway\r\nX-User-ID: alice\r\n"
            + f"Content-Type: {ctype}\r\nContent-Length: {content_length}\r\n".encode()
            + extra_headers + b"\r\n" + body)


FORM = multipart([("files", "scan.png", PNG), ("task_type", None, b"blur")])


async def test_a_body_shorter_than_its_content_length_is_400_and_stores_nothing(
    make_settings: Callable[..., Settings], fakes: Fakes
) -> None:
    body, ctype = FORM
    async with served(make_settings(upload_idle_timeout_seconds=2)) as port:
        # the request: a complete little form announced as 4 GiB
        status, answer = await exchange(port, post(body, ctype, 4 * 1024**3))
        assert status == 400, answer
        assert json.loads(answer)["code"] == "incomplete_body"
        assert "Content-Length" in json.loads(answer)["detail"]
        # a little short: the gateway waits for the rest, then refuses
        status, answer = await exchange(port, post(body, ctype, len(body) + 500))
        assert status == 400 and json.loads(answer)["code"] == "incomplete_body"
    assert not fakes.jobs.jobs
    assert not fakes.storage.objects


async def test_an_exact_body_and_a_short_epilogue_are_accepted(
    make_settings: Callable[..., Settings], fakes: Fakes
) -> None:
    body, ctype = FORM
    async with served(make_settings()) as port:
        status, answer = await exchange(port, post(body, ctype, len(body)))
        assert status == 202, answer
        status, answer = await exchange(port, post(body + b"\r\n", ctype, len(body) + 2))
        assert status == 202, answer
    assert len(fakes.jobs.jobs) == 2


@pytest.mark.parametrize("header", [
    b"X-User-ID: ali\nX-Evil: 1\r\n",  # the bare LF: would be user "ali" plus a header
    b"X-User-ID: ali\rX-Evil: 1\r\n",
    b"X-User-ID: alice\r\nX-Note: a\nb\r\n",
    b"X-User-ID: alice\r\nX-Note: a\x00b\r\n",
])
async def test_bare_cr_or_lf_in_a_header_is_refused_by_the_server(
    make_settings: Callable[..., Settings], fakes: Fakes, header: bytes
) -> None:
    async with served(make_settings()) as port:
        status, _ = await exchange(port, b"GET /jobs HTTP/1.1\r\nHost: gateway\r\n" + header + b"\r\n")
        assert status == 400
        body, ctype = FORM
        request = (b"POST /jobs HTTP/1.1\r\nHost: gateway\r\n" + header
                   + f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        status, _ = await exchange(port, request)
        assert status == 400
        # the same request with clean headers is fine: the server, not the test, made the difference
        status, _ = await exchange(port, b"GET /jobs HTTP/1.1\r\nHost: gateway\r\nX-User-ID: alice\r\n\r\n")
        assert status == 200
    assert not fakes.jobs.jobs


@pytest.mark.parametrize("framing", [
    b"Content-Length: 10\r\nContent-Length: 20\r\n",
    b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
    b"Content-Length: +10\r\n",
])
async def test_conflicting_length_framing_is_refused(
    make_settings: Callable[..., Settings], fakes: Fakes, framing: bytes
) -> None:
    async with served(make_settings()) as port:
        head = b"POST /jobs HTTP/1.1\r\nHost: gateway\r\nX-User-ID: alice\r\n"
        status, _ = await exchange(port, head + framing + b"\r\n" + b"x" * 10)
        assert status == 400
    assert not fakes.jobs.jobs
