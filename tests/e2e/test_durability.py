"""Nothing is lost: a full stop and restart, and a processor killed in the middle of a task."""

from __future__ import annotations

import gzip
import time

import nibabel as nib
import numpy as np

from tests.conftest import start_platform
from tests.e2e.conftest import client, download, png_bytes, stored_keys, submit, wait_job


def _wait_task_progress(c, job_id: str, at_least: int, timeout: float = 60) -> dict:  # type: ignore[no-untyped-def]
    """Wait until some task of the job has reached `at_least` percent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/jobs/{job_id}").json()
        if max(t["progress"] for t in job["task_results"]) >= at_least:
            return job
        time.sleep(0.02)
    raise AssertionError(f"task never reached {at_least}%: {job}")


def _slow_volume() -> bytes:
    """A 192^3 volume that compresses well but takes seconds to blur with a wide kernel."""
    x, y, z = np.meshgrid(*(np.arange(192, dtype=np.int16),) * 3, indexing="ij")
    data = ((x // 16 + y // 16 + z // 16) % 2 * 1000).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0]))
    return gzip.compress(img.to_bytes(), compresslevel=6)


def test_stop_everything_and_start_again(tmp_path) -> None:
    # One worker, one task at a time: of six slow tasks, most are still queued when we stop.
    env = {"RADIOLOGY_WORKERS": "1", "RADIOLOGY_CONCURRENCY": "1"}
    platform = start_platform(tmp_path / "data", env=env)
    try:
        with client(platform) as c:
            done_id = submit(c, [("done.png", png_bytes())]).json()["job_id"]
            done = wait_job(c, done_id)
            assert done["status"] == "SUCCESS"
            volume = _slow_volume()
            busy = submit(c, [(f"v{i}.nii.gz", volume) for i in range(6)], "blur", {"sigma": 6.0})
            assert busy.status_code == 202, busy.text
            busy_id = busy.json()["job_id"]
            _wait_task_progress(c, busy_id, 10)
            before = c.get(f"/jobs/{busy_id}").json()
            assert before["status"] == "RUNNING"
            assert sum(t["status"] == "PENDING" for t in before["task_results"]) >= 3
        platform.stop()  # SIGTERM everything, nats-server included
        keys_before = stored_keys(platform, "alice")

        platform.start()
        with client(platform) as c:
            again = c.get(f"/jobs/{done_id}").json()
            assert again["status"] == "SUCCESS"
            for field in ("input_file", "output_file", "task_type", "metadata"):
                assert again["task_results"][0]["result"][field] == done["task_results"][0]["result"][field]
            assert download(c, again["task_results"][0]["result"]["output_url"])
            finished = wait_job(c, busy_id, timeout=180)
            assert finished["status"] == "SUCCESS", [t["error"] for t in finished["task_results"]]
            assert len(finished["task_results"]) == 6
            # each: the volume and its axial, coronal and sagittal previews
            assert all(len(t["result"]["outputs"]) == 4 for t in finished["task_results"])
        assert set(keys_before) <= set(stored_keys(platform, "alice"))
    finally:
        platform.stop()


def test_processor_killed_mid_task_is_redelivered_without_duplicates(tmp_path) -> None:
    platform = start_platform(tmp_path / "data")
    try:
        with client(platform) as c:
            r = submit(c, [("big.nii.gz", _slow_volume())], "blur", {"sigma": 12.0})
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            job = _wait_task_progress(c, job_id, 40)
            assert job["task_results"][0]["status"] == "RUNNING"
            platform.kill("processor")  # SIGKILL: no goodbye, no ack
            time.sleep(0.5)
            assert c.get(f"/jobs/{job_id}").json()["status"] == "RUNNING"
            platform.start_service("processor")
            job = wait_job(c, job_id, timeout=120)
            assert job["status"] == "SUCCESS", job
            outputs = job["task_results"][0]["result"]["outputs"]
            assert sorted(o["role"] for o in outputs) == ["preview"] * 3 + ["primary"]  # 3 planes
        keys = stored_keys(platform, "alice")
        job_keys = sorted(k.split("/", 1)[1] for k in keys if k.startswith(job_id))
        assert job_keys == sorted(["big.nii.gz", *(o["filename"] for o in outputs)]), job_keys
    finally:
        platform.stop()


def test_jobs_service_killed_while_events_flow_loses_nothing(tmp_path) -> None:
    platform = start_platform(tmp_path / "data", env={"RADIOLOGY_WORKERS": "1", "RADIOLOGY_CONCURRENCY": "1"})
    try:
        with client(platform) as c:
            volume = _slow_volume()
            r = submit(c, [(f"v{i}.nii.gz", volume) for i in range(3)], "blur", {"sigma": 4.0})
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            _wait_task_progress(c, job_id, 10)
            platform.kill("jobs")  # SIGKILL: events keep arriving in JetStream, unacknowledged
            time.sleep(3)
            platform.start_service("jobs")
            job = wait_job(c, job_id, timeout=180)
            assert job["status"] == "SUCCESS", [t["error"] for t in job["task_results"]]
            assert [t["progress"] for t in job["task_results"]] == [100, 100, 100]
            assert all(t["result"]["outputs"] for t in job["task_results"])
    finally:
        platform.stop()
