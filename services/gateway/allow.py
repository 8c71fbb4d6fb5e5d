"""Which methods a path answers: the `Allow` header of a 405 and the answer to OPTIONS.

The framework's own 405 names only the first route that matched the path (`Allow: POST` on /jobs,
which also answers GET), so the set is computed here from every API route of the path."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.asgi import HttpMiddleware

# The web UI's catch-all GET route (app.py): it matches every path, so it is no API method of one.
WEB_UI_ROUTE = "web_ui"
_PROBED = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(router: Router, scope: Scope) -> list[str]:
    """The methods the API answers at the request's path, in a fixed order; [] when no API route
    has that path. Each method is tried against every route (included routers answer `matches`
    for their own routes)."""
    routes = [r for r in router.routes if getattr(r, "name", "") != WEB_UI_ROUTE]
    methods = [
        m for m in _PROBED
        if any(route.matches({**scope, "method": m})[0] is Match.FULL for route in routes)
    ]
    if not methods:
        return []
    if "GET" in methods and "HEAD" not in methods:
        methods.insert(methods.index("GET") + 1, "HEAD")  # HeadAsGetMiddleware answers it where GET is
    return [*methods, "OPTIONS"]


def allow_header(methods: list[str]) -> dict[str, str]:
    return {"Allow": ", ".join(methods)}


class OptionsMiddleware(HttpMiddleware):
    """OPTIONS on an API path: 204 with its Allow header. Inside the CORS middleware, which answers
    the browsers' preflight requests (OPTIONS with Access-Control-Request-Method) itself."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        super().__init__(app)
        self.router = router

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS" and (methods := allowed_methods(self.router, scope)):
            await Response(status_code=204, headers=allow_header(methods))(scope, receive, send)
            return
        await self.app(scope, receive, send)
