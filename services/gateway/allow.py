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
_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(router: Router, scope: Scope) -> list[str]:
    """The methods the API answers at the request's path, in a fixed order; [] when no API route
    has that path."""
    methods: set[str] = set()
    for route in router.routes:
        route_methods = getattr(route, "methods", None)
        if not route_methods or getattr(route, "name", "") == WEB_UI_ROUTE:
            continue
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= route_methods
    if not methods:
        return []
    if "GET" in methods:
        methods.add("HEAD")  # HeadAsGetMiddleware answers it wherever GET is answered
    methods.add("OPTIONS")
    return sorted(methods, key=lambda m: _ORDER.index(m) if m in _ORDER else len(_ORDER))


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
