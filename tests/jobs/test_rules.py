"""Pure rules: job derivation and event application (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.jobs.models import JobRow, TaskRow
from services.jobs.rules import derive_job

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _task(status: str, progress: int, name: str = "f.png", error: str = "") -> TaskRow:
    return TaskRow(status=status, progress=progress, input_file=name, error=error)


def _job(progress: int = 0) -> JobRow:
    return JobRow(status="PENDING", progress=progress, message="")


@pytest.mark.parametrize(
    ("tasks", "status", "progress"),
    [
        ([("PENDING", 0), ("PENDING", 0)], "PENDING", 0),
        ([("RUNNING", 40), ("PENDING", 0)], "RUNNING", 20),
        ([("SUCCESS", 100), ("PENDING", 0)], "RUNNING", 50),
        ([("SUCCESS", 100), ("SUCCESS", 100)], "SUCCESS", 100),
        ([("FAILED", 40), ("SUCCESS", 100)], "FAILED", 100),
        ([("FAILED", 40), ("RUNNING", 70)], "RUNNING", 85),
        ([("CANCELLED", 0), ("SUCCESS", 100)], "CANCELLED", 100),
        ([("CANCELLED", 0), ("FAILED", 10)], "FAILED", 100),
    ],
)
def test_derive_job(tasks: list[tuple[str, int]], status: str, progress: int) -> None:
    job = _job()
    changed = derive_job(job, [_task(s, p) for s, p in tasks], NOW)
    assert changed  # the message at least changes from ""
    assert (job.status, job.progress) == (status, progress)


def test_derive_job_never_lowers_progress_and_reports_first_error() -> None:
    job = _job(progress=60)
    derive_job(job, [_task("RUNNING", 10), _task("FAILED", 0, "b.dcm", "DICOM pixel data is truncated")], NOW)
    assert job.progress == 60
    assert job.status == "RUNNING"
    assert job.message == "b.dcm: DICOM pixel data is truncated"
    job2 = _job()
    assert derive_job(job2, [_task("SUCCESS", 100), _task("RUNNING", 40)], NOW)
    assert job2.message == "1 of 2 tasks done"
    assert not derive_job(job2, [_task("SUCCESS", 100), _task("RUNNING", 40)], NOW)  # no change
