"""The task-type rule: one table for the jobs service's CreateJob check and the processor's
registration check (both call is_valid_task_type)."""

from __future__ import annotations

import pytest

from services.common import messaging
from services.common.task_types import is_valid_task_type


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("blur", True),
        ("resize", True),
        ("mip", True),
        ("soft_tissue_window", True),
        ("edges2", True),
        ("_", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("Blur", False),
        ("edge-detect", False),
        ("blur.3d", False),  # a dot would split the NATS subject
        ("blur*", False),
        ("blur>", False),
        ("blur 2", False),
        ("blür", False),
        ("blur\n", False),
        (None, False),
    ],
)
def test_task_type_rule(name: object, valid: bool) -> None:
    assert is_valid_task_type(name) is valid  # type: ignore[arg-type]


def test_a_valid_task_type_is_one_subject_token() -> None:
    subject = messaging.task_subject("soft_tissue_window", "job", "task")
    assert subject.split(".") == [*messaging.TASKS_SUBJECT.split("."), "soft_tissue_window", "job", "task"]
