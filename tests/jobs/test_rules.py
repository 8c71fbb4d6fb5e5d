"""Pure rules: job derivation and event application (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.gen.radiology.v1 import common_pb2, tasks_pb2
from services.jobs.models import JobState, NewInput, TaskState
from services.jobs.rules import apply_event, cancel_task, derive_job, new_job

NOW = datetime(2025, 1, 1, tzinfo=UTC)
JOB_ID = "6f1c2a8e-4b7d-4c11-9a35-0d2e8f4b7a10"


def _task(status: str, progress: int, name: str = "f.png", error: str = "") -> TaskState:
    return TaskState(
        task_id="t-" + name, job_id=JOB_ID, user_id="alice", position=0, status=status, progress=progress,
        message="", input_file=name, input_key=f"alice/{JOB_ID}/{name}", input_format="png", size=1,
        output_stem=name.split(".")[0], error=error, result=None, published=True, published_at=NOW,
        started_at=None, finished_at=None, updated_at=NOW,
    )


def _job(tasks: list[TaskState], progress: int = 0) -> JobState:
    return JobState(
        job_id=JOB_ID, user_id="alice", status="PENDING", progress=progress, message="", task_type="blur",
        params={}, created_at=NOW, updated_at=NOW, tasks=tasks,
    )


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
    job = _job([_task(s, p) for s, p in tasks])
    changed = derive_job(job, NOW)
    assert changed  # the message at least changes from ""
    assert (job.status, job.progress) == (status, progress)


def test_derive_job_never_lowers_progress_and_reports_first_error() -> None:
    failed = _task("FAILED", 0, "b.dcm", "DICOM pixel data is truncated")
    job = _job([_task("RUNNING", 10), failed], progress=60)
    derive_job(job, NOW)
    assert job.progress == 60
    assert job.status == "RUNNING"
    assert job.message == "b.dcm: DICOM pixel data is truncated"
    job2 = _job([_task("SUCCESS", 100), _task("RUNNING", 40)])
    assert derive_job(job2, NOW)
    assert job2.message == "1 of 2 tasks done"
    assert not derive_job(job2, NOW)  # no change


def test_new_job_is_pending_with_one_unpublished_task_per_input() -> None:
    names = ["scan.png", "scan.dcm", "scan_processed.png"]
    inputs = [NewInput(n, f"alice/{JOB_ID}/{n}", "png", 10) for n in names]
    job = new_job(job_id=JOB_ID, user_id="alice", task_type="blur", params={}, inputs=inputs, now=NOW)
    assert (job.status, job.progress, job.message) == ("PENDING", 0, "0 of 3 tasks done")
    assert (job.created_at, job.updated_at) == (NOW, NOW)
    assert [t.input_file for t in job.tasks] == names and [t.position for t in job.tasks] == [0, 1, 2]
    assert {(t.status, t.progress, t.published) for t in job.tasks} == {("PENDING", 0, False)}
    assert len({t.task_id for t in job.tasks}) == 3
    assert len({t.output_stem for t in job.tasks}) == 3  # each task's outputs have names of their own


def _event(status: int, progress: int = 0, **kw: object) -> tasks_pb2.TaskEvent:
    return tasks_pb2.TaskEvent(task_id="t-f.png", job_id=JOB_ID, status=status, progress=progress,
                               emitted_at=NOW.timestamp(), **kw)


@pytest.mark.parametrize("status", [common_pb2.STATUS_UNSPECIFIED, common_pb2.STATUS_PENDING, 99])
def test_an_event_that_is_neither_running_nor_terminal_changes_nothing(status: int) -> None:
    task = _task("RUNNING", 40)
    assert not apply_event(task, _event(status, 70), NOW)
    assert (task.status, task.progress) == ("RUNNING", 40)


@pytest.mark.parametrize(
    ("status", "name"),
    [(common_pb2.STATUS_SUCCESS, "SUCCESS"), (common_pb2.STATUS_FAILED, "FAILED"),
     (common_pb2.STATUS_CANCELLED, "CANCELLED")],
)
def test_a_terminal_task_never_changes_again(status: int, name: str) -> None:
    task = _task("RUNNING", 40)
    assert apply_event(task, _event(status, 100, error="boom"), NOW)
    assert (task.status, task.progress, task.finished_at) == (name, 100, NOW)
    for later in (common_pb2.STATUS_RUNNING, common_pb2.STATUS_SUCCESS, common_pb2.STATUS_FAILED):
        assert not apply_event(task, _event(later, 100), NOW)
    assert not cancel_task(task, NOW)
    assert task.status == name


def test_running_events_only_raise_progress() -> None:
    task = _task("PENDING", 0)
    assert apply_event(task, _event(common_pb2.STATUS_RUNNING, 40, message="decoded"), NOW)
    assert (task.status, task.progress, task.message, task.started_at) == ("RUNNING", 40, "decoded", NOW)
    assert not apply_event(task, _event(common_pb2.STATUS_RUNNING, 10), NOW)
    assert not apply_event(task, _event(common_pb2.STATUS_RUNNING, 40), NOW)
    assert task.progress == 40
