"""The API's own documentation: /openapi.json with the real error shape, and Swagger UI at /docs
from assets served by the gateway itself (web/dist/vendor/swagger-ui, copied there from the npm
package swagger-ui-dist by web/build.mjs), so that it works without internet access."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from services.gateway.errors import ANY_PATH, error_responses

# Under the web UI's directory, served by its static route: /vendor/swagger-ui/<file>.
SWAGGER_DIR = "vendor/swagger-ui"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
SWAGGER_FAVICON = "favicon-32x32.png"

# FastAPI's schema of its default 422 ({"detail": [{loc, msg, type}]}), which this API never sends.
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

_NO_DOCS = """<!doctype html><html><head><meta charset="utf-8"><title>Radiology platform API</title></head>
<body><h1>Radiology platform API</h1><p>The interactive API docs need the built web assets
(web/dist/vendor/swagger-ui); run <code>make web</code> to build them. The OpenAPI document is at
<a href="{openapi}">{openapi}</a>.</p></body></html>"""


def without_default_validation_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Remove the 422 that FastAPI adds to every route with parameters, and its schemas: this API
    answers bad parameters with an Error, and the routes that can do so declare that 422 themselves."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {})
            ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
            if ref.rsplit("/", 1)[-1] in _FASTAPI_VALIDATION_SCHEMAS:
                del responses["422"]
    schemas = schema.get("components", {}).get("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    return schema


def with_any_path_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Errors that any path can answer (a method it does not have) under components/responses,
    named by their code: they belong to no one operation."""
    responses = schema.setdefault("components", {}).setdefault("responses", {})
    for error in ANY_PATH:
        doc = error_responses(error)[error.status]
        responses[error.code] = {
            "description": doc["description"],
            "headers": doc.get("headers", {}),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return schema


def install(app: FastAPI, web_dir: Path | None) -> None:
    """The cleaned-up OpenAPI document and GET /docs (create the app with docs_url=None); web_dir is
    the directory that the app serves at / (None when it serves none)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_any_path_errors(without_default_validation_errors(generate()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    openapi_url = app.openapi_url or "/openapi.json"
    assets = web_dir / SWAGGER_DIR if web_dir is not None else None

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        # Checked per request: `make web` may build the assets while the gateway runs.
        if assets is None or not all((assets / name).is_file() for name in (SWAGGER_JS, SWAGGER_CSS)):
            return HTMLResponse(_NO_DOCS.format(openapi=openapi_url))
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url=f"/{SWAGGER_DIR}/{SWAGGER_JS}",
            swagger_css_url=f"/{SWAGGER_DIR}/{SWAGGER_CSS}",
            swagger_favicon_url=f"/{SWAGGER_DIR}/{SWAGGER_FAVICON}",
            # No badge that would ask validator.swagger.io about the document.
            swagger_ui_parameters={"validatorUrl": None},
        )
