"""Nothing of a job is left in storage (objects and their metadata files) after DELETE /jobs/{id},
nor after retention removed it (RADIOLOGY_RETENTION_DAYS set to a few seconds here: fractional
days are allowed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.conftest import start_platform
from tests.e2e.conftest import PYDICOM_FILES, client, png_bytes, submit, wait_job

RETENTION_SECONDS = 4.0


def stored_of(platform: Any, job_id: str) -> list[str]:
    """Every file of the storage folder (data, metadata, temp) whose path names the job."""
    root = Path(platform.data_dir) / "objects"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and job_id in str(p))


def test_delete_and_retention_leave_nothing_of_a_job(tmp_path: Path) -> None:
    env = {"RADIOLOGY_RETENTION_DAYS": str(RETENTION_SECONDS / 86400),
           "RADIOLOGY_RETENTION_INTERVAL_SECONDS": "0.5"}
    platform = start_platform(tmp_path / "data", env=env)
    ct = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    try:
        with client(platform) as c:
            # Inputs, outputs and derived files (a DICOM input gets a browser preview of itself).
            deleted_id = submit(c, [("a.png", png_bytes(seed=1)), ("ct.dcm", ct)]).json()["job_id"]
            expired = submit(c, [("b.png", png_bytes(seed=2)), ("ct.dcm", ct)]).json()
            for job_id in (deleted_id, expired["job_id"]):
                assert wait_job(c, job_id)["status"] == "SUCCESS"
            finished = time.monotonic()
            for job_id in (deleted_id, expired["job_id"]):
                files = stored_of(platform, job_id)
                assert any("ct_input" in f for f in files) and len(files) >= 10, files

            assert c.delete(f"/jobs/{deleted_id}").status_code == 204
            assert stored_of(platform, deleted_id) == []
            assert c.get(f"/jobs/{deleted_id}").status_code == 404

            # Removed by retention, with every file, once older than the retention period.
            deadline = time.monotonic() + 30
            while c.get(f"/jobs/{expired['job_id']}").status_code != 404:
                assert time.monotonic() < deadline, "retention did not remove the job"
                time.sleep(0.2)
            assert time.monotonic() - finished >= RETENTION_SECONDS - 1  # not before its time
            assert stored_of(platform, expired["job_id"]) == []
            assert all(c.get(f"/tasks/{t}").status_code == 404 for t in expired["task_ids"])

            # A job finished just now is kept.
            fresh = submit(c, [("d.png", png_bytes(seed=4))]).json()["job_id"]
            assert wait_job(c, fresh)["status"] == "SUCCESS"
            assert stored_of(platform, fresh)
    finally:
        platform.stop()
