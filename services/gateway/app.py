"""The FastAPI application: routers, middleware, error handlers, the static web UI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from services.common.config import Settings
from services.gateway import errors
from services.gateway.catalogue import Catalogue
from services.gateway.clients import Backends
from services.gateway.metrics import RequestContextMiddleware
from services.gateway.routes import files, health, jobs, operations, tasks
from services.gateway.signing import UrlSigner

_NO_UI = """<!doctype html><html><head><meta charset="utf-8"><title>Radiology platform</title></head>
<body><h1>Radiology platform</h1><p>The web UI is not built. Run <code>make run</code> to build it,
or use the API: <a href="/docs">/docs</a>.</p></body></html>"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One long-lived channel per peer for the life of the process: no per-request set-up.
        backends = Backends(settings)
        app.state.backends = backends
        app.state.catalogue = Catalogue(backends)
        try:
            yield
        finally:
            await backends.close()

    app = FastAPI(
        title="Radiology platform",
        description="Upload medical images, process them asynchronously, follow and download results.",
        version="1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.signer = UrlSigner.from_settings(settings)

    errors.install(app)
    # Added innermost first: CatchAll < CORS < request context (outermost, so it sees every response).
    app.add_middleware(errors.CatchAllMiddleware)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["Location", "Content-Range", "ETag", "X-Request-ID", "Retry-After"],
    )
    app.add_middleware(RequestContextMiddleware)

    for module in (jobs, tasks, files, operations, health):
        app.include_router(module.router)

    web = Path(settings.web_dir)
    if web.is_dir():
        # Last, so that every API route wins over a file of the same name.
        app.mount("/", StaticFiles(directory=web, html=True), name="web")
    else:

        @app.get("/", include_in_schema=False)
        async def no_ui() -> HTMLResponse:
            return HTMLResponse(_NO_UI)

    return app
