"""The task deadline (RADIOLOGY_TASK_DEADLINE_SECONDS): one wording for the processor and the jobs
service's reconciler, which both fail a task past it."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """6 h, 5 min, 90 s."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def deadline_error(seconds: float, cause: str = "") -> str:
    """The error of a task failed at its deadline, with what kept it from finishing if known."""
    text = f"not finished within the task deadline of {duration(seconds)}"
    return f"{text}: {cause}" if cause else text
