"""Helpers for gateway tests: sample files, an in-process client, raw multipart bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn

from services.common.config import Settings
from services.gateway.app import create_app
from tests.conftest import free_port

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"\x01" * 500


@asynccontextmanager
async def gateway_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
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
