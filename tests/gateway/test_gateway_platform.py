"""Health, readiness, metrics, request ids, CORS, error shapes, down services, operations, web UI."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from services.common.config import Settings
from tests.conftest import free_port
from tests.gateway import catalogue_fixture
from tests.gateway.fakes import Fakes
from tests.gateway.helpers import PNG, gateway_client, upload

ALICE = {"X-User-ID": "alice"}


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "services": {"jobs": "SERVING", "storage": "SERVING", "processor": "SERVING"},
    }


async def test_readyz_names_the_service_that_is_down(make_settings: Callable[..., Settings]) -> None:
    async with gateway_client(make_settings(storage_addr=f"127.0.0.1:{free_port()}")) as client:
        start = time.monotonic()
        resp = await client.get("/readyz")
    assert time.monotonic() - start < 3
    assert resp.status_code == 503
    assert resp.json() == {"detail": "Backing services not reachable: storage", "code": "not_ready"}


async def test_a_down_service_is_a_quick_503(make_settings: Callable[..., Settings], fakes: Fakes) -> None:
    dead = f"127.0.0.1:{free_port()}"
    cases = [
        ("storage", lambda c: upload(c, [("files", "a.png", PNG)])),
        ("jobs", lambda c: c.get("/jobs/00000000-0000-4000-8000-000000000000", headers=ALICE)),
        ("jobs", lambda c: c.get("/jobs/00000000-0000-4000-8000-000000000000/events", headers=ALICE)),
        ("jobs", lambda c: upload(c, [("files", "a.png", PNG)])),
        ("processor", lambda c: c.get("/operations")),
        ("processor", lambda c: upload(c, [("task_type", None, b"blur"), ("files", "a.png", PNG)])),
    ]
    for service, request in cases:
        async with gateway_client(make_settings(**{f"{service}_addr": dead})) as client:
            start = time.monotonic()
            resp = await request(client)
            elapsed = time.monotonic() - start
        assert resp.status_code == 503, (service, resp.text)
        body = resp.json()
        assert body["code"] == "service_unavailable" and f"The {service} service" in body["detail"]
        assert resp.headers["retry-after"] == "1"
        assert elapsed < 3, (service, elapsed)
        assert fakes.storage.objects == {}  # a failed upload leaves nothing behind


async def test_a_stuck_storage_is_a_503_not_a_hang(
    make_settings: Callable[..., Settings], fakes: Fakes
) -> None:
    fakes.storage.stall_puts = True
    async with gateway_client(make_settings(rpc_timeout_seconds=0.5)) as client:
        start = time.monotonic()
        resp = await upload(client, [("files", "a.png", PNG + bytes(24 * 1024 * 1024))])
    assert resp.status_code == 503 and resp.json()["code"] == "service_unavailable"
    assert "storage" in resp.json()["detail"]
    assert time.monotonic() - start < 5
    assert fakes.storage.objects == {}


async def test_operations_catalogue_is_cached(client: httpx.AsyncClient, fakes: Fakes) -> None:
    resp = await client.get("/operations", headers={"X-Request-ID": "req-42"})
    assert resp.status_code == 200
    # The processor's catalogue, unchanged, in its order.
    assert resp.json() == {"operations": catalogue_fixture.load()}
    assert fakes.processor.last_metadata["x-request-id"] == "req-42"  # request id travels over gRPC
    await client.get("/operations")
    assert fakes.processor.list_calls == 1


async def test_operations_show_whole_numbers_as_integers(client: httpx.AsyncClient) -> None:
    resp = await client.get("/operations")
    # Struct carries every number as a double; JSON Schema readers expect 512, not 512.0.
    assert not re.search(r"\d\.0\b", resp.text), resp.text
    resize = {o["name"]: o for o in resp.json()["operations"]}["resize"]["params_schema"]
    width = resize["properties"]["width"]
    assert width["type"] == "integer"
    assert all(type(width[k]) is int for k in ("minimum", "maximum", "default"))
    shape = resize["properties"]["shape"]["anyOf"][1]
    assert type(shape["maxItems"]) is int and type(shape["items"]["maximum"]) is int
    assert resize["properties"]["shape"]["default"] is None


async def test_request_id_metrics_and_access_log(client: httpx.AsyncClient, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level("INFO", logger="services.gateway.access")
    resp = await client.get("/jobs/nope-123", headers={**ALICE, "X-Request-ID": "abc-123"})
    assert resp.status_code == 404 and resp.headers["x-request-id"] == "abc-123"
    generated = (await client.get("/healthz", headers={"X-Request-ID": "bad id\u0000"})).headers[
        "x-request-id"
    ]
    assert len(generated) == 32 and generated != "bad id"
    assert any("GET /jobs/nope-123 404" in r.getMessage() for r in caplog.records)

    metrics = (await client.get("/metrics")).text
    assert 'api_request_rate_total{code="404",method="GET",route="/jobs/{job_id}"}' in metrics
    assert 'api_request_duration_seconds_bucket{le="0.005",method="GET",route="/healthz"}' in metrics
    assert "nope-123" not in metrics


async def test_cors_for_the_seed_frontend(client: httpx.AsyncClient) -> None:
    origin = {"Origin": "http://localhost:3000"}
    pre = await client.options(
        "/jobs",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-user-id",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "http://localhost:3000"
    resp = await client.get("/healthz", headers=origin)
    exposed = resp.headers["access-control-expose-headers"]
    assert all(h in exposed for h in ("Location", "Content-Range", "ETag"))
    evil = await client.get("/healthz", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in evil.headers


async def test_unexpected_error_is_generic_500_json(client: httpx.AsyncClient) -> None:
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    client.app.add_api_route("/boom", boom)  # type: ignore[attr-defined]
    resp = await client.get("/boom", headers={"Origin": "http://localhost:3000"})
    assert resp.status_code == 500
    assert resp.json() == {
        "detail": "Something went wrong on our side; it has been logged.",
        "code": "internal_error",
    }
    assert "secret" not in resp.text
    assert resp.headers["x-request-id"]
    assert resp.headers["access-control-allow-origin"] == "http://localhost:3000"


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    resp = await client.get("/nothing/here")
    assert resp.status_code == 404 and resp.json() == {"detail": "Not found", "code": "not_found"}
    resp = await client.put("/healthz")
    assert resp.status_code == 405 and resp.json()["code"] == "method_not_allowed"


async def test_web_ui_served_at_root_after_api(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with gateway_client(make_settings()) as client:
        resp = await client.get("/")
        assert resp.status_code == 200 and "not built" in resp.text and "make run" in resp.text
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<html>viewer</html>")
    (web / "healthz").write_text("a static file must not shadow the API")
    async with gateway_client(make_settings(web_dir=str(web))) as client:
        assert (await client.get("/")).text == "<html>viewer</html>"
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        missing = await client.get("/nothing.js")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_trace_context_travels_to_grpc(client: httpx.AsyncClient, fakes: Fakes) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    await client.get("/operations", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert trace_id in fakes.processor.last_metadata["traceparent"]


async def test_openapi_documents_the_upload_form(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    form = spec["paths"]["/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {"files", "task_type", "params"}
    params = {p["name"] for p in spec["paths"]["/jobs/{job_id}"]["get"]["parameters"]}
    assert params == {"job_id", "X-User-ID"}
    assert (await client.get("/docs")).status_code == 200
