"""Server-Sent Events: every state of a job, in order, then the stream ends."""

from __future__ import annotations

import json

from tests.e2e.conftest import client, png_bytes, submit

ORDER = {"PENDING": 0, "RUNNING": 1, "SUCCESS": 2, "FAILED": 2, "CANCELLED": 2}


def _events(c, job_id: str) -> list[dict]:  # type: ignore[no-untyped-def]
    events = []
    with c.stream("GET", f"/jobs/{job_id}/events", timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                assert name == "job"
                events.append(json.loads(line.split(":", 1)[1]))
    return events


def test_sse_delivers_states_in_order_and_closes(platform) -> None:
    with client(platform, "watcher") as c:
        files = [(f"s{i}.png", png_bytes((256, 256), seed=i)) for i in range(3)]
        job_id = submit(c, files).json()["job_id"]
        events = _events(c, job_id)
    assert events, "no events"
    statuses = [e["status"] for e in events]
    progress = [e["progress"] for e in events]
    assert statuses[-1] == "SUCCESS" and progress[-1] == 100
    assert all(ORDER[a] <= ORDER[b] for a, b in zip(statuses, statuses[1:], strict=False)), statuses
    assert progress == sorted(progress), progress
    assert all(e["job_id"] == job_id for e in events)
    # The final event is the full job body, results included.
    assert all(t["result"]["outputs"] for t in events[-1]["task_results"])


def test_sse_for_a_finished_job_sends_one_event_and_closes(platform) -> None:
    with client(platform, "watcher") as c:
        job_id = submit(c, [("x.png", png_bytes())]).json()["job_id"]
        _events(c, job_id)
        again = _events(c, job_id)
    assert [e["status"] for e in again] == ["SUCCESS"]
