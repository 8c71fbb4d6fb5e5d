"""The task-type rule: what an operation may be called.

A task type names an operation of the processor's catalogue. The jobs service refuses any other
name at CreateJob and the processor refuses to register one, so the two can never disagree. The
name is also one token of the NATS subject ``radiology.tasks.<task_type>.<job_id>.<task_id>``, hence no dots,
wildcards or spaces.
"""

from __future__ import annotations

import re

TASK_TYPE_RULE = "1-64 characters of a-z 0-9 _"
_TASK_TYPE = re.compile(r"[a-z0-9_]{1,64}")


def is_valid_task_type(name: str) -> bool:
    return isinstance(name, str) and bool(_TASK_TYPE.fullmatch(name))
