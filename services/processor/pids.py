"""Whether a process id belongs to a running process (imports nothing heavy: pool workers use it)."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True while the process runs. A PermissionError from kill(pid, 0) means the process exists
    (it belongs to another user); a zombie (killed, not yet reaped) does not count as running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]  # after "(comm)", which may hold spaces
    except (OSError, IndexError):
        return True  # no /proc (or it vanished meanwhile): kill(pid, 0) has answered
    return state != b"Z"
