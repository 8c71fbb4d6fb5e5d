"""Files of an upload whose gateway died before the job existed are removed by the jobs service's
janitor once they are older than the grace period; files of real jobs are never touched."""

from __future__ import annotations

import threading
import time

import httpx

from tests.conftest import start_platform
from tests.e2e.conftest import client, png_bytes, stored_keys, submit, wait_job


def test_gateway_killed_mid_upload_leaves_nothing_behind(tmp_path) -> None:
    env = {"RADIOLOGY_JANITOR_INTERVAL_SECONDS": "1", "RADIOLOGY_ORPHAN_GRACE_SECONDS": "2"}
    platform = start_platform(tmp_path / "data", env=env)
    try:
        with client(platform) as c:
            done = wait_job(c, submit(c, [("kept.png", png_bytes())]).json()["job_id"])
            assert done["status"] == "SUCCESS"
        kept = set(stored_keys(platform, "alice"))

        # A two-file upload: the first file is stored whole, the second is still arriving when
        # the gateway is SIGKILLed, so CreateJob never runs.
        boundary = "b0undary"
        first_stored = threading.Event()
        release = threading.Event()

        def body():  # type: ignore[no-untyped-def]
            for name in ("one.png", "two.png"):
                yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                       f"filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").encode()
                yield png_bytes()
                yield b"\r\n"
            first_stored.set()
            release.wait(30)
            yield f"--{boundary}--\r\n".encode()

        def upload() -> None:
            try:
                httpx.post(f"{platform.base_url}/jobs", content=body(), timeout=30,
                           headers={"X-User-ID": "alice",
                                    "Content-Type": f"multipart/form-data; boundary={boundary}"})
            except httpx.HTTPError:
                pass  # the gateway is gone

        sender = threading.Thread(target=upload, daemon=True)
        sender.start()
        assert first_stored.wait(20)
        deadline = time.monotonic() + 10
        while not (set(stored_keys(platform, "alice")) - kept) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphans = set(stored_keys(platform, "alice")) - kept
        assert orphans, "the upload's first file should be in storage before the kill"
        platform.kill("gateway")
        release.set()
        sender.join(10)
        platform.start_service("gateway")

        deadline = time.monotonic() + 20
        while set(stored_keys(platform, "alice")) != kept and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(stored_keys(platform, "alice")) == kept  # orphans gone, the real job intact
        with client(platform) as c:
            assert [j["job_id"] for j in c.get("/jobs").json()["jobs"]] == [done["job_id"]]
    finally:
        platform.stop()
