"""Task events are untrusted input: anything holding processor credentials can publish one.

Before an event changes a task (rules.apply_event), its content is checked against what the jobs
service itself knows about that task: every output must be a file of that task's own job folder
(`{user_id}/{job_id}/`, the task's owner and job from the database, never the event's say), named as
one of that task's outputs, with a media type from a known list and a known role. An event that fails
is dropped and logged, never applied. Texts a user will read (message, error, logs) are reduced to
plain, bounded text: control and bidirectional-override characters removed; the UI shows them as text.
"""

from __future__ import annotations

import logging
import re
from typing import Protocol

from services.common.gen.radiology.v1 import common_pb2, tasks_pb2
from services.common.keys import OUTPUT_ROLES, is_key_of_job, is_valid_filename, output_names, parse_key
from services.common.task_types import is_valid_task_type
from services.common.tasklogs import clean_logs, plain_text

log = logging.getLogger(__name__)

MEDIA_TYPES = frozenset({
    "image/png", "image/jpeg", "application/gzip", "application/dicom", "application/zip",
})
ROLES = OUTPUT_ROLES
MAX_OUTPUTS = 32
MAX_MESSAGE_CHARS = 500
MAX_ERROR_CHARS = 2000
MAX_METADATA_BYTES = 256 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


class Task(Protocol):
    task_id: str
    job_id: str
    user_id: str
    input_file: str
    output_stem: str


def _output_problem(task: Task, output: common_pb2.Output, allowed_names: frozenset[str]) -> str | None:
    name = output.filename
    if not is_valid_filename(name):
        return f"output name {name[:80]!r} is not a valid file name"
    if not is_key_of_job(output.key, task.user_id, task.job_id) or parse_key(output.key).filename != name:
        return f"output key {output.key[:200]!r} is not {name!r} in the task's own job folder"
    if allowed_names and name.casefold() not in allowed_names:
        return f"output {name!r} is not one of the names this task may write"
    if output.media_type not in MEDIA_TYPES:
        return f"output {name!r} has media type {output.media_type[:80]!r}, not one of {sorted(MEDIA_TYPES)}"
    if output.role not in ROLES:
        return f"output {name!r} has role {output.role[:40]!r}, not one of {sorted(ROLES)}"
    if output.size < 0 or (output.sha256 and not _SHA256.fullmatch(output.sha256)):
        return f"output {name!r} has a negative size or a malformed sha256"
    return None


def problem(task: Task, event: tasks_pb2.TaskEvent) -> str | None:
    """Why this event must not be applied to this task, or None."""
    if not event.HasField("result"):
        return None
    result = event.result
    if len(result.outputs) > MAX_OUTPUTS:
        return f"{len(result.outputs)} outputs (at most {MAX_OUTPUTS})"
    stem = task.output_stem
    allowed = frozenset(n.casefold() for n in output_names(stem)) if stem else frozenset()
    for output in result.outputs:
        if (reason := _output_problem(task, output, allowed)) is not None:
            return reason
    if result.output_file and (
        not is_valid_filename(result.output_file)
        or (result.outputs and result.output_file != result.outputs[0].filename)
    ):
        return f"output_file {result.output_file[:80]!r} is not the primary output's name"
    if result.input_file and result.input_file != task.input_file:
        return f"input_file {result.input_file[:80]!r} is not the task's input"
    if result.task_type and not is_valid_task_type(result.task_type):
        return "task_type is not an operation name"
    if result.metadata.ByteSize() > MAX_METADATA_BYTES:
        return f"metadata larger than {MAX_METADATA_BYTES} bytes"
    return None


def accept(task: Task, event: tasks_pb2.TaskEvent) -> bool:
    """True when the event may be applied to the task; its texts are made plain on the way. A
    refused event is logged (a forged event, or a processor bug) and changes nothing."""
    reason = problem(task, event)
    if reason is not None:
        log.error("dropping a task event that breaks the rules: %s", reason,
                  extra={"task_id": task.task_id, "job_id": task.job_id})
        return False
    event.message = plain_text(event.message, MAX_MESSAGE_CHARS)
    event.error = plain_text(event.error, MAX_ERROR_CHARS)
    logs = clean_logs(event.logs)
    del event.logs[:]
    event.logs.extend(logs)
    return True
