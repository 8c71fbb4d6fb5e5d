"""Fair share on the real platform: while user A keeps 16 jobs in flight, user B's small job finishes
within 2x its idle latency plus one of A's task durations. The same flood without the per-user
dispatch cap (RADIOLOGY_MAX_DISPATCHED_TASKS_PER_USER=0) shows what it prevents: B waits behind
A's queue. Prints the figures (docs/security.md quotes them)."""

from __future__ import annotations

import io
import statistics
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import start_platform
from tests.e2e.conftest import TERMINAL, client, png_bytes, submit

IN_FLIGHT = 16
# One processor replica with two pool processes that pulls only what it can run (concurrency =
# workers), and each user at most that many tasks in the stream.
ENV = {
    "RADIOLOGY_WORKERS": "2",
    "RADIOLOGY_CONCURRENCY": "2",
    "RADIOLOGY_RATE_LIMIT_PER_MINUTE": "0",
    "RADIOLOGY_MAX_ACTIVE_JOBS_PER_USER": "0",
}


def heavy_png(size: int = 2000) -> bytes:
    """About a second of blurring at sigma 30 (a gradient with a little noise, so that it stays
    within the inflation limit)."""
    y, x = np.mgrid[0:size, 0:size]
    noise = np.random.default_rng(0).integers(0, 4, (size, size))
    out = io.BytesIO()
    Image.fromarray(((x + y + noise) % 256).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _latency(c: httpx.Client, body: bytes) -> float:
    """Seconds from POST /jobs to the job's SUCCESS, polled every 20 ms."""
    start = time.monotonic()
    r = submit(c, [("small.png", body)], params={"sigma": 1.0})
    assert r.status_code == 202, r.text
    while True:
        job = c.get(f"/jobs/{r.json()['job_id']}").json()
        if job["status"] in TERMINAL:
            assert job["status"] == "SUCCESS", job
            return time.monotonic() - start
        time.sleep(0.02)


class Flood:
    """User A: keeps IN_FLIGHT jobs of one heavy task each, submitting a new one as each ends."""

    def __init__(self, base_url: str, body: bytes) -> None:
        self.c = httpx.Client(base_url=base_url, headers={"X-User-ID": "flood-a"}, timeout=60)
        self.body = body
        self.stop = threading.Event()
        self.durations: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _submit(self) -> str:
        r = submit(self.c, [("heavy.png", self.body)], params={"sigma": 30.0})
        assert r.status_code == 202, r.text
        return r.json()["job_id"]

    def _run(self) -> None:
        live = [self._submit() for _ in range(IN_FLIGHT)]
        while not self.stop.is_set():
            for job_id in list(live):
                job = self.c.get(f"/jobs/{job_id}").json()
                if job["status"] in TERMINAL:
                    task = job["task_results"][0]
                    if task["started_at"] and task["finished_at"]:
                        started, finished = (datetime.fromisoformat(task[k])
                                             for k in ("started_at", "finished_at"))
                        self.durations.append((finished - started).total_seconds())
                    live.remove(job_id)
                    live.append(self._submit())
            time.sleep(0.05)
        for job_id in live:
            self.c.post(f"/jobs/{job_id}/cancel")

    def __enter__(self) -> Flood:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(60)
        self.c.close()


@pytest.mark.parametrize("cap", [2, 0], ids=["fair-share", "no-cap"])
def test_a_flood_does_not_make_another_users_job_wait_behind_it(tmp_path: Path, cap: int) -> None:
    env = {**ENV, "RADIOLOGY_MAX_DISPATCHED_TASKS_PER_USER": str(cap)}
    platform = start_platform(tmp_path / "data", env=env)
    try:
        small, heavy = png_bytes((64, 48)), heavy_png()
        with client(platform, "small-b") as b:
            _latency(b, small)  # warm
            idle = statistics.median(_latency(b, small) for _ in range(5))
            with Flood(platform.base_url, heavy) as flood:
                while len(flood.durations) < 4:  # the flood is in full swing
                    time.sleep(0.1)
                loaded = [_latency(b, small) for _ in range(3)]
                durations = list(flood.durations)
        # B may have to wait for one of A's running tasks to end: the longest one seen is the bound.
        task = max(durations)
        bound = 2 * idle + task
        print(f"\n[cap {cap}] B idle {idle:.2f} s; A's task {statistics.median(durations):.2f} s "
              f"(longest {task:.2f} s); B during A's flood of {IN_FLIGHT} jobs: "
              f"{', '.join(f'{x:.2f}' for x in loaded)} s (bound {bound:.2f} s)")
        if cap:
            assert max(loaded) <= bound, (loaded, bound)
        else:  # what fair share prevents: B's job queued behind A's
            assert statistics.median(loaded) > bound, (loaded, bound)
    finally:
        platform.stop()
