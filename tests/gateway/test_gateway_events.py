"""GET /jobs/{id}/events: Server-Sent Events over JobService.WatchJob (real uvicorn)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from services.common.config import Settings
from services.common.gen.radiology.v1 import common_pb2
from services.gateway import sse
from tests.gateway.fakes import Fakes, result_for
from tests.gateway.helpers import PNG, check_error_body, live_gateway, multipart

ALICE = {"X-User-ID": "alice"}


@pytest.fixture
async def live(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with live_gateway(make_settings()) as url, httpx.AsyncClient(
        base_url=url, timeout=10, event_hooks={"response": [check_error_body]}
    ) as client:
        yield client


async def create(client: httpx.AsyncClient) -> str:
    body, ctype = multipart([("files", "a.png", PNG)])
    resp = await client.post("/jobs", content=body, headers={**ALICE, "Content-Type": ctype})
    assert resp.status_code == 202, resp.text
    return resp.json()["job_id"]


async def events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs, and ("comment", text) for keep-alives."""
    event, data = "", ""
    async for line in lines:
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and event:
            yield event, data
            event, data = "", ""


async def test_events_in_order_then_close(live: httpx.AsyncClient, fakes: Fakes) -> None:
    job_id = await create(live)
    steps = [
        (common_pb2.STATUS_RUNNING, 10),
        (common_pb2.STATUS_RUNNING, 70),
        (common_pb2.STATUS_SUCCESS, 100),
    ]
    seen = []
    async with live.stream("GET", f"/jobs/{job_id}/events", headers=ALICE) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache" and resp.headers["x-accel-buffering"] == "no"

        async def read_all() -> None:
            async for kind, data in events(resp.aiter_lines()):
                assert kind == "job"
                body = json.loads(data)
                seen.append((body["status"], body["progress"]))
                if steps:
                    status, progress = steps.pop(0)
                    job = fakes.jobs.jobs[job_id]
                    if status == common_pb2.STATUS_SUCCESS:
                        job.tasks[0].result.CopyFrom(result_for(job, job.tasks[0]))
                    await fakes.jobs.update(job_id, status, progress)

        await asyncio.wait_for(read_all(), 10)  # returns only because the server closed the stream
    assert seen == [("PENDING", 0), ("RUNNING", 10), ("RUNNING", 70), ("SUCCESS", 100)]
    for _ in range(100):  # the watch ends right after the stream; allow for a loaded machine
        if fakes.jobs.active_watches == 0:
            break
        await asyncio.sleep(0.05)
    assert fakes.jobs.active_watches == 0


async def test_terminal_job_sends_one_event_and_closes(live: httpx.AsyncClient, fakes: Fakes) -> None:
    job_id = await create(live)
    await fakes.jobs.update(job_id, common_pb2.STATUS_FAILED, 100, error="bad data")
    resp = await asyncio.wait_for(live.get(f"/jobs/{job_id}/events", headers=ALICE), 5)
    body = resp.text
    assert body.count("event: job\n") == 1
    payload = json.loads(body.split("data: ", 1)[1].split("\n", 1)[0])
    assert payload["status"] == "FAILED" and payload["task_results"][0]["error"] == "bad data"


async def test_keepalive_and_disconnect_cancels_watch(
    live: httpx.AsyncClient, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.2)
    job_id = await create(live)
    async with live.stream("GET", f"/jobs/{job_id}/events", headers=ALICE) as resp:
        kinds = []
        async for kind, _ in events(resp.aiter_lines()):
            kinds.append(kind)
            if len(kinds) == 3:
                break
        assert kinds == ["job", "comment", "comment"]
        assert fakes.jobs.active_watches == 1
    # The client went away: the gateway must cancel the gRPC stream promptly.
    for _ in range(100):
        if fakes.jobs.active_watches == 0:
            break
        await asyncio.sleep(0.05)
    assert fakes.jobs.active_watches == 0
