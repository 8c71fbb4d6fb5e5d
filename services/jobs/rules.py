"""Pure rules of the jobs service: a new job, idempotent event application, cancellation, job
derivation.

No I/O here, so every rule is tested directly and applied the same way on every backend.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf import json_format

from services.common.gen.radiology.v1 import common_pb2, tasks_pb2
from services.common.keys import choose_output_stems, series_name, series_stem_base
from services.common.status import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCESS,
    TERMINAL,
    TERMINAL_NAMES,
    status_name,
)
from services.jobs import event_checks
from services.jobs.models import JobState, NewInput, TaskState

# A ZIP input may become at most this many tasks, one per series.
MAX_SERIES_PER_INPUT = 1000
_SERIES_UID = re.compile(r"[\x21-\x7e]{1,64}")  # as files carry them: printable ASCII, at most 64


class SeriesInput(Protocol):
    series_instance_uid: str
    name: str


class InputWithSeries(Protocol):
    filename: str

    @property
    def series(self) -> Sequence[SeriesInput]: ...


def series_problem(inputs: Sequence[InputWithSeries]) -> str | None:
    """Why the series listed for the inputs cannot become tasks, or None."""
    for inp in inputs:
        uids = [s.series_instance_uid for s in inp.series]
        if len(uids) > MAX_SERIES_PER_INPUT:
            return f"{inp.filename}: at most {MAX_SERIES_PER_INPUT} series per input"
        if not all(_SERIES_UID.fullmatch(u) for u in uids):
            return f"{inp.filename}: a series_instance_uid must be 1-64 printable ASCII characters"
        if len(set(uids)) != len(uids):
            return f"{inp.filename}: a series is listed twice"
    return None


# How far a processor's clock may be from ours before its timestamps are not believed.
MAX_CLOCK_SKEW_SECONDS = 24 * 3600.0


def new_job(
    *,
    job_id: str,
    user_id: str,
    task_type: str,
    params: dict[str, Any],
    inputs: Sequence[NewInput],
    now: datetime,
) -> JobState:
    """A new job: one PENDING, unpublished task per input (per series for a ZIP input whose series
    are listed), each with an output stem of its own."""
    work: list[tuple[NewInput, str, str | None]] = []  # (input, series uid, stem base)
    for inp in inputs:
        if not inp.series:
            work.append((inp, "", None))
        for index, (uid, name) in enumerate(inp.series):
            work.append((inp, uid, series_stem_base(inp.filename, series_name(name, index))))
    stems = choose_output_stems([i.filename for i, _, _ in work], [base for _, _, base in work])
    tasks = [
        TaskState(
            task_id=str(uuid.uuid4()), job_id=job_id, user_id=user_id, position=position,
            status=PENDING, progress=0, message="queued", input_file=inp.filename, input_key=inp.key,
            input_format=inp.format, size=inp.size, output_stem=stem, error="", result=None,
            published=False, published_at=None, started_at=None, finished_at=None, updated_at=now,
            series_uid=uid,
        )
        for position, ((inp, uid, _), stem) in enumerate(zip(work, stems, strict=True))
    ]
    job = JobState(
        job_id=job_id, user_id=user_id, status=PENDING, progress=0, message="", task_type=task_type,
        params=params, created_at=now, updated_at=now, tasks=tasks,
    )
    derive_job(job, now)  # its message
    return job


def _event_time(event: tasks_pb2.TaskEvent, now: datetime) -> datetime:
    # The processor's clock says when the step really happened; fall back to ours when it says
    # nothing or something absurd (NaN, the year 5000: an event must never break a batch).
    if abs(event.emitted_at - now.timestamp()) <= MAX_CLOCK_SKEW_SECONDS:
        return datetime.fromtimestamp(event.emitted_at, UTC)
    return now


def apply_event(task: TaskState, event: tasks_pb2.TaskEvent, now: datetime) -> bool:
    """Apply one event to a task; True when it changed something.

    Idempotent: a terminal task never changes; a RUNNING event changes a task only when it moves it
    out of PENDING or raises its progress; progress never goes down."""
    # An event reports RUNNING or a terminal state; a terminal task never changes again.
    if not (event.status == common_pb2.STATUS_RUNNING or event.status in TERMINAL):
        return False
    if task.status in TERMINAL_NAMES:
        return False
    if event.job_id and event.job_id != task.job_id:
        return False
    if not event_checks.accept(task, event):  # untrusted content: outputs, texts
        return False
    status = status_name(event.status)
    progress = max(task.progress, min(100, max(0, event.progress)))
    at = _event_time(event, now)

    if status == RUNNING:
        if task.status == RUNNING and progress <= task.progress:
            return False
        task.status = RUNNING
        task.progress = progress
        task.message = event.message or task.message
        task.started_at = task.started_at or at
    else:
        task.status = status
        task.finished_at = at
        task.started_at = task.started_at or at
        task.logs = list(event.logs)  # cleaned by event_checks.accept
        if status == SUCCESS:
            task.progress = 100
            task.message = event.message or "done"
            task.result = json_format.MessageToDict(event.result, preserving_proto_field_name=True)
            task.output_bytes = sum(max(0, o.size) for o in event.result.outputs)  # the user's quota
            task.error = ""
        elif status == FAILED:
            task.progress = 100
            task.error = event.error or event.message or "processing failed"
            task.message = event.message or "failed"
        else:
            task.progress = 100
            task.message = event.message or "cancelled"
    task.updated_at = now
    return True


def cancel_task(task: TaskState, now: datetime) -> bool:
    if task.status in TERMINAL_NAMES:
        return False
    task.status = CANCELLED
    # Finished like a failed task: 100, so that the job's progress is the mean of what its tasks show.
    task.progress = 100
    task.message = "cancelled"
    task.finished_at = now
    task.updated_at = now
    return True


def fail_task(task: TaskState, error: str, now: datetime) -> bool:
    """Fail an unfinished task (the reconciler: past its deadline); False when it is terminal."""
    if task.status in TERMINAL_NAMES:
        return False
    task.status = FAILED
    task.progress = 100
    task.error = error
    task.message = "failed"
    task.finished_at = now
    task.started_at = task.started_at or now
    task.updated_at = now
    return True


def _plural(n: int) -> str:
    return "task" if n == 1 else "tasks"


def derive_job(job: JobState, now: datetime) -> bool:
    """The job's tasks changed at `now`: recompute its status, progress and message from them and
    set updated_at; True when status, progress or message changed.

    docs/design.md "Job status derivation": no task started -> PENDING; any task not terminal ->
    RUNNING; all terminal -> FAILED if any failed, else CANCELLED if any cancelled, else SUCCESS.
    Progress is the mean (terminal tasks count 100), never lowered."""
    tasks = job.tasks
    n = len(tasks)
    statuses = [t.status for t in tasks]
    done = sum(s in TERMINAL_NAMES for s in statuses)
    if n == 0:
        status = job.status
    elif all(s == PENDING for s in statuses):
        status = PENDING
    elif done < n:
        status = RUNNING
    elif FAILED in statuses:
        status = FAILED
    elif CANCELLED in statuses:
        status = CANCELLED
    else:
        status = SUCCESS

    mean = sum(100 if t.status in TERMINAL_NAMES else t.progress for t in tasks) // n if n else 0
    progress = max(job.progress, mean)

    failed = next((t for t in tasks if t.status == FAILED), None)
    if failed is not None:
        message = f"{failed.input_file}: {failed.error}"
    elif status == CANCELLED:
        ok = statuses.count(SUCCESS)
        message = f"cancelled; {ok} of {n} {_plural(n)} done"
    else:
        message = f"{done} of {n} {_plural(n)} done"

    changed = (status, progress, message) != (job.status, job.progress, job.message)
    job.status, job.progress, job.message = status, progress, message
    job.updated_at = now
    return changed
