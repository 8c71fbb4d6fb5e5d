"""The FastAPI application: routers, middleware, error handlers, the static web UI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from services.common.config import Settings
from services.gateway import apidocs, auth, errors
from services.gateway.allow import WEB_UI_ROUTE, OptionsMiddleware, allow_header, allowed_methods
from services.gateway.asgi import HttpMiddleware
from services.gateway.catalogue import Catalogue
from services.gateway.clients import Backends
from services.gateway.errors import ANY_OPERATION, METHOD_NOT_ALLOWED, ApiError, error_responses
from services.gateway.metrics import RequestContextMiddleware
from services.gateway.routes import files, health, jobs, operations, tasks, usage
from services.gateway.signing import UrlSigner
from services.gateway.submit import Submissions

_NO_UI = """<!doctype html><html><head><meta charset="utf-8"><title>Radiology platform</title></head>
<body><h1>Radiology platform</h1><p>The web UI is not built. Run <code>make run</code> to build it,
or use the API: <a href="/docs">/docs</a>.</p></body></html>"""


class HeadAsGetMiddleware(HttpMiddleware):
    """Answer HEAD wherever GET is answered. The server (uvicorn) still sees the original HEAD
    request and sends no body; /files has its own HEAD handler (no storage read)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD" and not scope["path"].startswith("/files/"):
            scope = dict(scope, method="GET")
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One long-lived channel per peer for the life of the process: no per-request set-up.
        backends = Backends(settings)
        app.state.backends = backends
        app.state.catalogue = Catalogue(backends.processor, timeout=settings.validate_timeout_seconds)
        app.state.submissions = Submissions(backends, app.state.catalogue, settings)
        try:
            yield
        finally:
            await app.state.submissions.close()
            await backends.close()

    app = FastAPI(
        title="Radiology platform",
        description="Upload medical images, process them asynchronously, follow and download results.",
        version="1.0",
        lifespan=lifespan,
        responses=error_responses(*ANY_OPERATION),
        # Swagger UI from local assets (apidocs); ReDoc would load its script from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.signer = UrlSigner.from_settings(settings)
    # jwt mode: built now, so that a configuration that cannot verify tokens stops the start.
    app.state.jwt = auth.JwtVerifier.from_settings(settings) if settings.auth == "jwt" else None

    errors.install(app)
    # Added innermost first: CatchAll < OPTIONS < CORS < request context (outermost: sees every response).
    app.add_middleware(errors.CatchAllMiddleware)
    app.add_middleware(OptionsMiddleware, router=app.router)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=[
            "Location", "Content-Range", "ETag", "X-Request-ID", "Retry-After", "WWW-Authenticate",
            "Idempotent-Replayed", "Allow",
        ],
    )
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(HeadAsGetMiddleware)

    for module in (jobs, tasks, files, operations, usage, health):
        app.include_router(module.router)

    web = Path(settings.web_dir)
    apidocs.install(app, web if web.is_dir() else None)
    if web.is_dir():
        ui = StaticFiles(directory=web, html=True)

        # Last, and for GET only: API routes win, and other methods on API paths get their 405.
        @app.get("/{path:path}", include_in_schema=False, name=WEB_UI_ROUTE)
        async def web_ui(path: str, request: Request) -> Response:
            if methods := allowed_methods(app.router, request.scope):  # an API path without GET
                raise ApiError(METHOD_NOT_ALLOWED, headers=allow_header(methods))
            return await ui.get_response(path or ".", request.scope)
    else:

        @app.get("/", include_in_schema=False)
        async def no_ui() -> HTMLResponse:
            return HTMLResponse(_NO_UI)

    return app
