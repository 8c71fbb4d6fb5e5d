"""Faults of the processing path, on the real platform, each with its figures: storage down for a
minute with a queue, a purged task stream, a frozen processor, and kill -9 of each service under load.

Each scenario prints jobs and tasks submitted, succeeded, failed, lost (not finished when the
scenario ends) and duplicated (a task whose output objects were written again after its result was
recorded). Waits are on observable conditions with generous deadlines (the machine is shared);
the only fixed pauses are the faults' own durations.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from services.common import messaging, nats_auth
from tests.conftest import start_platform
from tests.e2e.conftest import TERMINAL, client, submit

ACK_WAIT = 4.0
STALL = 5.0
ENV = {
    "RADIOLOGY_ACK_WAIT_SECONDS": str(ACK_WAIT),
    "RADIOLOGY_TASK_STALL_SECONDS": str(STALL),
    "RADIOLOGY_RECONCILE_INTERVAL_SECONDS": "1",
    "RADIOLOGY_STORAGE_PROBE_SECONDS": "1",
    "RADIOLOGY_RETRY_BACKOFF_MAX_SECONDS": "2",
    "RADIOLOGY_RPC_TIMEOUT_SECONDS": "3",
    "RADIOLOGY_MAX_FILES_PER_JOB": "20",
}
FILES_PER_JOB = 10


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    p = start_platform(tmp_path_factory.mktemp("faults"), env=ENV)
    yield p
    p.stop()


def _image(size: int, seed: int) -> bytes:
    """A gradient (small as a PNG) that takes a moment to blur at this size."""
    y, x = np.mgrid[0:size, 0:size]
    buf = io.BytesIO()
    Image.fromarray(((x + y + seed) % 256).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _submit_jobs(c: httpx.Client, jobs: int, size: int = 512, params: dict | None = None) -> list[str]:
    ids = []
    for j in range(jobs):
        files = [(f"s{j}_{i}.png", _image(size, j * FILES_PER_JOB + i)) for i in range(FILES_PER_JOB)]
        r = submit(c, files, "blur", params)
        assert r.status_code == 202, r.text
        ids.append(r.json()["job_id"])
    return ids


def _jobs(c: httpx.Client, job_ids: list[str]) -> dict[str, dict[str, Any]] | None:
    """Every job as the API shows it; None while the gateway or the jobs service is away."""
    found = {}
    for job_id in job_ids:
        try:
            r = c.get(f"/jobs/{job_id}")
        except httpx.HTTPError:
            return None
        if r.status_code == 503:
            return None
        assert r.status_code == 200, r.text
        found[job_id] = r.json()
    return found


def _tasks(jobs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for job in jobs.values() for t in job["task_results"]]


def _until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not reached after {timeout:.0f}s"
        time.sleep(0.25)


def _all_terminal(c: httpx.Client, job_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    def check() -> dict[str, dict[str, Any]] | None:
        jobs = _jobs(c, job_ids)
        return jobs if jobs and all(j["status"] in TERMINAL for j in jobs.values()) else None

    try:
        return _until("every job finished", check, timeout)
    except AssertionError:
        jobs = _jobs(c, job_ids) or {}
        lost = [t["task_id"] for t in _tasks(jobs) if t["status"] not in TERMINAL]
        raise AssertionError(f"{len(lost)} task(s) not finished after {timeout:.0f}s: {lost[:5]}") from None


# --- NATS, as the jobs service's user ---------------------------------------------------------


async def _with_js(platform: Any, action: Any) -> Any:
    password = nats_auth.ensure_credentials(platform.nats_auth_dir)["jobs"]
    nc = await messaging.connect(platform.nats_url, "jobs", user="jobs", password=password)
    try:
        return await action(nc.jetstream())
    finally:
        await nc.close()


def _processor_idle(platform: Any) -> bool:
    """The task stream is empty and the processors hold no message."""
    async def check(js: Any) -> bool:
        stream = await js.stream_info(messaging.TASKS_STREAM)
        info = await js.consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
        return stream.state.messages == 0 and info.num_ack_pending == 0 and info.num_pending == 0

    try:
        return asyncio.run(_with_js(platform, check))
    except Exception:  # NATS restarting
        return False


def _queued(platform: Any) -> int:
    async def count(js: Any) -> int:
        return (await js.stream_info(messaging.TASKS_STREAM)).state.messages
    return asyncio.run(_with_js(platform, count))


# --- figures ------------------------------------------------------------------------------------


def _rewritten(platform: Any, job: dict[str, Any], task: dict[str, Any]) -> bool:
    """True when an output of a finished task was written after its result was recorded (a second
    run replaced what users already saw)."""
    finished = datetime.fromisoformat(task["finished_at"]).timestamp()
    folder = Path(platform.data_dir) / "objects" / "meta" / job["user_id"] / job["job_id"]
    for out in task["result"]["outputs"]:
        stored = json.loads((folder / f"{out['filename']}.json").read_text())
        if stored["modified_at"] > finished or stored["sha256"] != out["sha256"]:
            return True
    return False


def _figures(name: str, platform: Any, jobs: dict[str, dict[str, Any]], **extra: Any) -> dict[str, int]:
    tasks = _tasks(jobs)
    by_task = {t["task_id"]: job for job in jobs.values() for t in job["task_results"]}
    figures = {
        "jobs": len(jobs),
        "submitted": len(tasks),
        "succeeded": sum(t["status"] == "SUCCESS" for t in tasks),
        "failed": sum(t["status"] == "FAILED" for t in tasks),
        "lost": sum(t["status"] not in TERMINAL for t in tasks),
        "duplicated": sum(t["status"] == "SUCCESS" and _rewritten(platform, by_task[t["task_id"]], t)
                          for t in tasks),
        **extra,
    }
    print(f"\n[faults] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    errors = {t["error"] for t in tasks if t["status"] == "FAILED"}
    assert figures["failed"] == 0, errors
    assert figures["lost"] == 0 and figures["duplicated"] == 0, figures
    return figures


def _runs(platform: Any, outcome: str = "success") -> float:
    """tasks_processed{outcome=...} of the running processor."""
    url = f"http://127.0.0.1:{platform.ports.metrics['processor']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tasks_processed_total{") and f'outcome="{outcome}"' in line)


def _group_signal(platform: Any, name: str, sig: int) -> None:
    os.killpg(platform.procs[name].pid, sig)  # the service and its pool workers


# --- scenarios ----------------------------------------------------------------------------------


def test_purged_task_stream_heals_through_the_reconciler(platform: Any) -> None:
    with client(platform, "purge") as c:
        warm = _submit_jobs(c, 1, size=64)  # validates these params while a processor answers
        _all_terminal(c, warm, 60)
        platform.stop_service("processor")
        job_ids = _submit_jobs(c, 2, size=64)
        # The dispatcher has put what fair share allows (8 per user) in the stream; purge it all.
        _until("tasks in the stream", lambda: _queued(platform) >= 8, 30)
        asyncio.run(_with_js(platform, lambda js: js.purge_stream(messaging.TASKS_STREAM)))
        assert _queued(platform) == 0
        purged_at = time.monotonic()
        platform.start_service("processor")
        jobs = _all_terminal(c, job_ids, 120)
        healed = time.monotonic() - purged_at
        _until("processor idle", lambda: _processor_idle(platform), 30)
        _figures("purged stream", platform, _jobs(c, job_ids) or jobs, healed_in_s=round(healed))
    log = (platform.data_dir / "logs" / "jobs.log").read_text()
    assert "republished" in log


def test_frozen_processor_gives_no_duplicate_result(platform: Any) -> None:
    with client(platform, "frozen") as c:
        successes, dropped = _runs(platform), _runs(platform, "duplicate")
        job_ids = _submit_jobs(c, 2, size=1536, params={"sigma": 12})

        def busy() -> bool:
            jobs = _jobs(c, job_ids)
            return bool(jobs) and any(t["status"] == "RUNNING" for t in _tasks(jobs))

        _until("a task running", busy, 60)
        _group_signal(platform, "processor", signal.SIGSTOP)
        time.sleep(ACK_WAIT * 2)  # well past ack_wait: JetStream redelivers what it holds
        _group_signal(platform, "processor", signal.SIGCONT)
        jobs = _all_terminal(c, job_ids, 180)
        _until("processor idle", lambda: _processor_idle(platform), 60)
        runs = _runs(platform) - successes
        figures = _figures("frozen processor", platform, _jobs(c, job_ids) or jobs, successful_runs=int(runs),
                           redeliveries_not_run=int(_runs(platform, "duplicate") - dropped))
        assert runs == figures["submitted"]  # no task ran to success twice


def _queue_then_work(platform: Any, c: httpx.Client, jobs: int, params: dict) -> list[str]:
    """Jobs queued while no processor runs, then a processor started: returns once the first task
    has succeeded, so that most of the queue is still waiting and some tasks are in flight."""
    _all_terminal(c, _submit_jobs(c, 1, size=64, params=params), 60)  # these params are known good
    platform.stop_service("processor")
    job_ids = _submit_jobs(c, jobs, size=1024, params=params)
    platform.start_service("processor")

    def some_done() -> bool:
        found = _jobs(c, job_ids)
        return bool(found) and any(t["status"] == "SUCCESS" for t in _tasks(found))

    _until("the first task done", some_done, 60)
    return job_ids


def test_storage_down_for_a_minute_fails_nothing(platform: Any) -> None:
    with client(platform, "outage") as c:
        job_ids = _queue_then_work(platform, c, 10, {"sigma": 8})
        platform.kill("storage")  # SIGKILL, with tasks queued and some in flight
        jobs = _jobs(c, job_ids) or {}
        waiting = sum(t["status"] not in TERMINAL for t in _tasks(jobs))
        running = sum(t["status"] == "RUNNING" for t in _tasks(jobs))
        time.sleep(60)
        during = _jobs(c, job_ids) or {}
        assert not any(t["status"] == "FAILED" for t in _tasks(during))
        platform.start_service("storage")
        jobs = _all_terminal(c, job_ids, 240)
        _until("processor idle", lambda: _processor_idle(platform), 30)
        _figures("storage down 60 s", platform, _jobs(c, job_ids) or jobs,
                 waiting_at_outage=waiting, running_at_outage=running)
        assert waiting >= 50  # the outage really met a queue


@pytest.mark.parametrize("victim", ["processor", "storage", "jobs", "nats"])
def test_kill_9_under_load_loses_nothing(platform: Any, victim: str) -> None:
    with client(platform, f"kill-{victim}") as c:
        job_ids = _queue_then_work(platform, c, 3, {"sigma": 8})
        platform.kill(victim)
        if victim == "nats":
            platform.start_nats()
        else:
            platform.start_service(victim)
        jobs = _all_terminal(c, job_ids, 180)
        _until("processor idle", lambda: _processor_idle(platform), 60)
        _figures(f"kill -9 {victim}", platform, _jobs(c, job_ids) or jobs)
