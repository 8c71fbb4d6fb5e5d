"""Pure rules: output stems and job derivation (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.jobs.models import JobRow, TaskRow
from services.jobs.rules import choose_output_stems, derive_job, output_names, strip_image_extension

NOW = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "stem"),
    [("scan.nii.gz", "scan"), ("scan.NII", "scan"), ("ct.dcm", "ct"), ("x.jpeg", "x"),
     ("series.zip", "series"), ("noext", "noext"), ("a.b.png", "a.b"), (".png", ".png")],
)
def test_strip_image_extension(name: str, stem: str) -> None:
    assert strip_image_extension(name) == stem


@pytest.mark.parametrize(
    "inputs",
    [
        ["a.png", "a.dcm", "a_processed.png"],
        ["a.png", "A.jpg", "a_2.png", "a_2_processed.nii.gz"],
        ["scan.nii.gz", "scan.nii", "scan_preview.png", "scan_2.dcm"],
        ["x_processed.png", "x.png", "x_processed_processed.png"],
        [".png", "output.png"],
        ["scan.dcm", "scan_input.png"],
        ["a.dcm", "a_processed.jpg", "b.zip", "b_input.nii.gz"],
    ],
)
def test_output_stems_never_collide(inputs: list[str]) -> None:
    stems = choose_output_stems(inputs)
    assert len(stems) == len(inputs)
    outputs = [o.casefold() for s in stems for o in output_names(s)]
    assert len(set(outputs)) == len(outputs), "two tasks share an output name"
    assert not set(outputs) & {i.casefold() for i in inputs}, "an output would overwrite an input"


def test_output_stems_simple_cases_keep_the_name() -> None:
    assert choose_output_stems(["scan.dcm", "brain.nii.gz"]) == ["scan", "brain"]
    # "a_processed.png" is an input, so the stem "a" is not allowed for a.png.
    stems = choose_output_stems(["a.png", "a.dcm", "a_processed.png"])
    assert stems[2] == "a_processed"
    assert "a" not in stems and len(set(stems)) == 3


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
