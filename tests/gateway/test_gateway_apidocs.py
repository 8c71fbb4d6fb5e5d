"""The API's documentation: /openapi.json and the README document the real error shape and
statuses, and /docs (Swagger UI) loads nothing from another host."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.config import Settings
from services.gateway import errors
from services.gateway.apidocs import SWAGGER_CSS, SWAGGER_DIR, SWAGGER_JS
from services.gateway.errors import CODES, ApiError, Error, ErrorCode
from tests.gateway.helpers import gateway_client

ROOT = Path(__file__).resolve().parents[2]
WEB_DIST = ROOT / "web" / "dist"  # built by `make web` (npm ci && npm run build in web/)
ERROR_REF = "#/components/schemas/Error"
ALICE = {"X-User-ID": "alice"}


def _error_statuses(operation: dict[str, Any]) -> set[int]:
    return {int(s) for s in operation["responses"] if s[0] in "45"}


def _schema_ref(response: dict[str, Any]) -> str | None:
    return response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")


async def test_openapi_documents_the_real_error_shape(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    error = spec["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"detail", "code"} and set(error["required"]) == {"detail", "code"}
    assert all(error["properties"][k]["type"] == "string" for k in ("detail", "code"))

    # FastAPI's default 422 ({"detail": [{loc, msg, type}]}) is gone, everywhere.
    text = json.dumps(spec)
    assert "HTTPValidationError" not in text and "ValidationError" not in spec["components"]["schemas"]

    paths = spec["paths"]
    every = {500}  # a fault of the gateway itself, anywhere
    service = {502, 503}  # a backing service failed or is not reachable
    one_job = {400, 401, 404} | service | every
    expected = {
        ("/jobs", "post"): {400, 401, 408, 409, 413, 415, 422, 429} | service | every,
        ("/jobs", "get"): {400, 401, 422} | service | every,
        ("/jobs/{job_id}", "get"): one_job,
        ("/jobs/{job_id}", "delete"): one_job,
        ("/jobs/{job_id}/events", "get"): one_job,
        ("/jobs/{job_id}/cancel", "post"): one_job,
        ("/tasks/{task_id}", "get"): one_job,
        ("/files/{user_id}/{job_id}/{filename}", "get"): {400, 401, 404, 416} | service | every,
        ("/operations", "get"): service | every,
        ("/usage", "get"): {400, 401} | service | every,
        ("/config", "get"): every,
        ("/readyz", "get"): {503} | every,
        ("/healthz", "get"): every,
    }
    documented = {(p, m) for p, item in paths.items() for m in item}
    assert documented == set(expected)
    for (path, method), statuses in expected.items():
        operation = paths[path][method]
        assert _error_statuses(operation) == statuses, (method, path)
        for status in statuses:
            response = operation["responses"][str(status)]
            assert _schema_ref(response) == ERROR_REF, (method, path, status)
            assert response["description"], (method, path, status)

    upload = paths["/jobs"]["post"]["responses"]
    assert "file_too_large" in upload["413"]["description"]
    assert "unknown_task_type" in upload["422"]["description"]
    assert "Retry-After" in upload["503"]["headers"] and "Retry-After" in upload["429"]["headers"]
    assert {"rate_limited", "too_many_active_jobs"} <= set(_CODE_LINE.findall(upload["429"]["description"]))
    assert "storage_quota_exceeded" in upload["413"]["description"]
    usage = paths["/usage"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert usage == {"$ref": "#/components/schemas/Usage"}
    assert "Allow" in spec["components"]["responses"]["method_not_allowed"]["headers"]
    files = paths["/files/{user_id}/{job_id}/{filename}"]["get"]["responses"]
    assert "Content-Range" in files["416"]["headers"] and {"206", "304"} <= set(files)
    assert "text/event-stream" in paths["/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]


async def test_error_bodies_match_the_documented_schema(client: httpx.AsyncClient) -> None:
    responses = [
        await client.get("/jobs", params={"limit": 0}, headers=ALICE),  # FastAPI's own validation
        await client.get("/jobs"),
        await client.get("/jobs", headers={"X-User-ID": "../x"}),
        await client.get("/jobs/nope", headers=ALICE),
        await client.post("/jobs", content=b"x", headers={**ALICE, "Content-Type": "text/plain"}),
    ]
    assert [r.status_code for r in responses] == [422, 401, 400, 404, 400]
    for resp in responses:
        assert set(resp.json()) == {"detail", "code"}
        Error.model_validate(resp.json())


_CODE_LINE = re.compile(r"^- `([a-z_]+)`: ", re.M)


def _documented_codes(spec: dict[str, Any]) -> set[tuple[int, str]]:
    """(status, code) of every error the document describes, in operations and components."""
    found = set()
    responses = [
        (status, response)
        for item in spec["paths"].values()
        for operation in item.values()
        for status, response in operation["responses"].items()
        if status[0] in "45"
    ]
    for name, response in spec["components"].get("responses", {}).items():
        responses.append((str(CODES[name].status), response))
    for status, response in responses:
        codes = _CODE_LINE.findall(response["description"])
        assert codes, (status, response["description"])
        found |= {(int(status), code) for code in codes}
    return found


async def test_every_code_the_gateway_sends_is_documented_with_its_status(client: httpx.AsyncClient) -> None:
    """The registry is what the gateway can send (ApiError takes only registered codes, and every
    error response of this suite is checked against it by the test client): the document names
    each code under its own status, and names nothing else."""
    spec = (await client.get("/openapi.json")).json()
    registered = {(e.status, e.code) for e in CODES.values()}
    assert _documented_codes(spec) == registered
    assert {
        (413, "file_too_large"), (415, "unsupported_file"), (409, "conflict"), (502, "backend_error")
    } <= registered


def test_the_readme_names_every_code_under_its_status() -> None:
    """README.md's error paragraph (from "Errors are JSON" to the /openapi.json sentence) names
    each registered code after its own status, and no other code."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Errors are JSON")
    paragraph = readme[start : readme.index("`/openapi.json` lists", start)]
    named, status = set(), 0
    for m in re.finditer(r"\b([45]\d\d)\b|`([a-z_]+)`", paragraph):
        if m.group(1):
            status = int(m.group(1))
        elif m.group(2) not in ("detail", "code"):
            named.add((status, m.group(2)))
    assert named == {(e.status, e.code) for e in CODES.values()}


def test_an_error_is_built_from_a_registered_code_only() -> None:
    with pytest.raises(ValueError, match="unregistered"):
        ApiError(ErrorCode(413, "too_large_file", "a typo of a code"))
    error = ApiError(errors.SERVICE_UNAVAILABLE)
    assert (error.status, error.code, error.headers) == (503, "service_unavailable", {"Retry-After": "1"})


def _refs(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"url: *'([^']+)'", html)


async def _check_docs_page(client: httpx.AsyncClient) -> list[str]:
    """/docs references no other host, and every file it references is served."""
    resp = await client.get("/docs")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    html = resp.text
    assert not re.search(r"https?://|//cdn|jsdelivr|unpkg", html), html
    refs = _refs(html)
    assert refs, html
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        served = await client.get(ref)
        assert served.status_code == 200, (ref, served.status_code)
    return refs


async def test_docs_without_the_built_assets_say_how_to_get_them(client: httpx.AsyncClient) -> None:
    refs = await _check_docs_page(client)
    assert refs == ["/openapi.json"]
    assert "make web" in (await client.get("/docs")).text
    assert (await client.get("/redoc")).status_code == 404  # ReDoc would need a CDN: not offered


async def test_docs_serve_swagger_ui_from_the_web_dir(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    web = tmp_path / "web"
    assets = web / SWAGGER_DIR
    assets.mkdir(parents=True)
    (web / "index.html").write_text("<html>viewer</html>")
    (assets / SWAGGER_JS).write_text("window.SwaggerUIBundle = function () {};")
    (assets / SWAGGER_CSS).write_text("body {}")
    (assets / "favicon-32x32.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    async with gateway_client(make_settings(web_dir=str(web))) as client:
        refs = await _check_docs_page(client)
        assert set(refs) == {
            f"/{SWAGGER_DIR}/{SWAGGER_JS}",
            f"/{SWAGGER_DIR}/{SWAGGER_CSS}",
            f"/{SWAGGER_DIR}/favicon-32x32.png",
            "/openapi.json",
        }
        assert (await client.head("/docs")).status_code == 200


async def test_docs_with_the_real_web_build(make_settings: Callable[..., Settings]) -> None:
    if not (WEB_DIST / SWAGGER_DIR / SWAGGER_JS).is_file():
        pytest.skip("web/dist is not built with Swagger UI: run `make web`")
    async with gateway_client(make_settings(web_dir=str(WEB_DIST))) as client:
        refs = await _check_docs_page(client)
        js = await client.get(f"/{SWAGGER_DIR}/{SWAGGER_JS}")
        assert "javascript" in js.headers["content-type"] and "SwaggerUIBundle" in js.text
        css = await client.get(f"/{SWAGGER_DIR}/{SWAGGER_CSS}")
        assert css.headers["content-type"].startswith("text/css") and ".swagger-ui" in css.text
        assert f"/{SWAGGER_DIR}/favicon-32x32.png" in refs
