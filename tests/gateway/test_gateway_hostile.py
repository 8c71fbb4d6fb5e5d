"""Hostile requests found in review: each gets a clear 4xx, never a 500, and leaves nothing stored."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from services.common.config import Settings
from services.gateway import catalogue
from tests.gateway.fakes import Fakes
from tests.gateway.helpers import PNG, check_error_body, gateway_client, live_gateway, multipart, upload

ALICE = {"X-User-ID": "alice"}


@pytest.mark.parametrize(
    "params",
    [
        '{"sigma": NaN}',
        '{"sigma": Infinity}',
        '{"sigma": 1e400}',
        '{"a": ' * 40 + "1" + "}" * 40,
        "[" * 5000 + "]" * 5000,
        '{"a": [[[[[[[[[[1]]]]]]]]]]}',
    ],
)
async def test_params_that_break_parsers_are_422(
    client: httpx.AsyncClient, fakes: Fakes, params: str
) -> None:
    resp = await upload(client, [("files", "a.png", PNG), ("params", None, params.encode())])
    assert resp.status_code == 422, resp.text
    assert resp.json()["code"] == "invalid_params"
    assert fakes.storage.objects == {}


@pytest.mark.parametrize("field", ["task_type", "params"])
async def test_a_repeated_field_is_refused(client: httpx.AsyncClient, fakes: Fakes, field: str) -> None:
    value = b"blur" if field == "task_type" else b"{}"
    resp = await upload(client, [(field, None, value), ("files", "a.png", PNG), (field, None, value)])
    assert resp.status_code == 400 and resp.json()["code"] == "duplicate_field"
    assert fakes.storage.objects == {}


async def test_non_ascii_digits_in_token_and_range(client: httpx.AsyncClient) -> None:
    job_id = (await upload(client, [("files", "scan.png", PNG)])).json()["job_id"]
    path = f"/files/alice/{job_id}/scan.png"
    assert (await client.get(path, params={"token": "\u00b2.abc"})).status_code == 404
    assert (await client.get(path, params={"token": "1" * 300})).status_code == 404
    for spec in ("bytes=\u00b2-", "bytes=-\u00b2", "bytes=0-\u00b2"):
        resp = await client.get(path, headers={**ALICE, "Range": spec.encode()})  # type: ignore[dict-item]
        assert resp.status_code == 200 and resp.content == PNG  # malformed Range: ignored


async def test_head_ignores_range_like_it_should(client: httpx.AsyncClient) -> None:
    job_id = (await upload(client, [("files", "scan.png", PNG)])).json()["job_id"]
    path = f"/files/alice/{job_id}/scan.png"
    for spec in ("bytes=0-1", "bytes=99999-"):
        resp = await client.head(path, headers={**ALICE, "Range": spec})
        assert resp.status_code == 200 and resp.headers["content-length"] == str(len(PNG))


async def test_head_and_methods_on_api_routes(make_settings: Callable[..., Settings], tmp_path) -> None:  # type: ignore[no-untyped-def]
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html><title>ui</title>")
    async with live_gateway(make_settings(web_dir=str(web))) as url, httpx.AsyncClient(
        base_url=url, event_hooks={"response": [check_error_body]}
    ) as c:
        assert (await c.head("/healthz")).status_code == 200
        assert (await c.get("/")).text.startswith("<!doctype html>")
        put = await c.put("/jobs", headers=ALICE)
        assert put.status_code == 405 and "POST" in put.headers["allow"]  # not the UI's "GET, HEAD"
        missing = await c.get("/no-such-page")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_a_stalled_upload_is_dropped_and_cleaned_up(
    make_settings: Callable[..., Settings], fakes: Fakes
) -> None:
    body, ctype = multipart([("files", "a.png", PNG + b"\x00" * 300_000)])
    settings = make_settings(upload_idle_timeout_seconds=0.5)
    async with live_gateway(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (f"POST /jobs HTTP/1.1\r\nHost: x\r\nX-User-ID: alice\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        writer.write(head + body[: len(body) // 2])  # then nothing more
        await writer.drain()
        response = await asyncio.wait_for(reader.read(65536), 20)
        writer.close()
    assert response.startswith(b"HTTP/1.1 408"), response[:200]
    assert b'"upload_stalled"' in response
    assert fakes.storage.objects == {}


async def test_identity_header_edge_cases(client: httpx.AsyncClient) -> None:
    # An empty id is an invalid one (README: 1-64 characters), not a missing one.
    empty = await client.get("/jobs", headers={"X-User-ID": ""})
    assert empty.status_code == 400 and empty.json()["code"] == "invalid_user_id"
    twice = await client.get("/jobs", headers=[("X-User-ID", "alice"), ("X-User-ID", "bob")])
    assert twice.status_code == 400 and twice.json()["code"] == "invalid_user_id"
    edge = "a" * 64
    assert (await client.get("/jobs", headers={"X-User-ID": edge})).status_code == 200


async def test_validated_params_are_remembered_not_trusted_blindly(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    for _ in range(3):
        r = await upload(client, [("files", "a.png", PNG), ("params", None, b'{"sigma": 2}')])
        assert r.status_code == 202
    assert fakes.processor.validate_calls == 1  # one round trip for the same operation and params
    r = await upload(client, [("files", "a.png", PNG), ("params", None, b'{"sigma": 3}')])
    assert r.status_code == 202 and fakes.processor.validate_calls == 2
    bad = await upload(client, [("files", "a.png", PNG), ("params", None, b'{"sigma": -1}')])
    assert bad.status_code == 422
    again = await upload(client, [("files", "a.png", PNG), ("params", None, b'{"sigma": -1}')])
    assert again.status_code == 422 and fakes.processor.validate_calls == 4  # refusals are not cached


async def test_params_validated_before_are_accepted_while_processors_are_down(
    make_settings: Any, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalogue, "CACHE_SECONDS", 0.0)  # every upload asks the processor again
    async with gateway_client(make_settings()) as client:
        ok = await upload(client, [("files", "a.png", PNG), ("params", None, b'{"sigma": 2}')])
        assert ok.status_code == 202
        fakes.processor.down = True
        again = await upload(client, [("files", "b.png", PNG), ("params", None, b'{"sigma": 2}')])
        assert again.status_code == 202, again.text  # queued for when a processor is back
        # ListOperations found it down: the earlier answer is used without waiting on another call.
        assert fakes.processor.validate_calls == 1 and fakes.processor.list_calls >= 2
        unseen = await upload(client, [("files", "c.png", PNG), ("params", None, b'{"sigma": 3}')])
        assert unseen.status_code == 503 and "processor" in unseen.json()["detail"]
        assert len(fakes.jobs.jobs) == 2  # the refused upload made no job and left no file
        assert not [k for k in fakes.storage.objects if k.endswith("c.png")]


async def test_cleanup_of_a_refused_upload_is_retried_when_storage_hiccups(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.storage.fail_delete_prefix = 2
    r = await upload(client, [("files", "good.png", PNG), ("files", "bad.txt", b"just text" * 100)])
    assert r.status_code == 415
    for _ in range(100):  # two failures: retried after 0.5 s and 1 s
        if not fakes.storage.objects:
            break
        await asyncio.sleep(0.05)
    assert fakes.storage.objects == {} and fakes.storage.fail_delete_prefix == 0


async def test_a_client_that_disconnects_mid_upload_leaves_nothing_and_no_error_log(
    make_settings: Any, fakes: Fakes, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings()
    async with live_gateway(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        body, ctype = multipart([("files", "a.png", PNG + b"\0" * 300_000), ("files", "b.png", PNG)])
        head = (f"POST /jobs HTTP/1.1\r\nHost: {host}\r\nX-User-ID: alice\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        writer.write(head + body[: len(body) // 2])  # a.png partly sent, then the client is gone
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(1.5)  # the gateway notices, removes what it stored, and logs
    assert not fakes.storage.objects, list(fakes.storage.objects)
    assert not fakes.jobs.jobs
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text
