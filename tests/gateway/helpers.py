"""Helpers for gateway tests: sample files, an in-process client, raw multipart bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn

from services.common.config import Settings
from services.gateway.app import create_app
from services.gateway.errors import CODES
from tests.conftest import free_port

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"\x01" * 500


async def check_error_body(response: httpx.Response) -> None:
    """Every error the gateway sends is {"detail", "code"} with a registered code, under that
    code's status (the OpenAPI document lists the registry)."""
    if response.status_code < 400 or response.request.method == "HEAD":
        return
    await response.aread()
    body = response.json()
    assert set(body) == {"detail", "code"} and body["detail"], body
    assert body["code"] in CODES, f"{body['code']!r} is not a registered error code"
    assert CODES[body["code"]].status == response.status_code, (response.status_code, body)


@asynccontextmanager
async def gateway_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", event_hooks={"response": [check_error_body]}
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def multipart(
    parts: list[tuple[str, str | None, bytes]], boundary: str = "testboundary42"
) -> tuple[bytes, str]:
    """A multipart/form-data body with raw control over names (httpx would escape hostile ones)."""
    out = bytearray()
    for name, filename, data in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


async def upload(
    client: httpx.AsyncClient,
    parts: list[tuple[str, str | None, bytes]],
    user: str | None = "alice",
    **headers: str,
) -> httpx.Response:
    body, ctype = multipart(parts)
    h = {"Content-Type": ctype, **headers}
    if user is not None:
        h["X-User-ID"] = user
    return await client.post("/jobs", content=body, headers=h)


@asynccontextmanager
async def live_gateway(settings: Settings) -> AsyncIterator[str]:
    """The app behind a real uvicorn on a free port (for streaming and disconnects); yields its URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
