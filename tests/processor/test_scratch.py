"""Scratch folders and the one `alive(pid)` rule that the sweeper and the pool's workers share."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from services.processor import scratch
from services.processor.pids import alive


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0].decode()


def test_a_running_process_is_alive() -> None:
    assert alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert alive(child.pid)
    finally:
        child.kill()
        child.wait()


def test_a_zombie_is_not_alive_and_neither_is_a_reaped_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while _state(child.pid) != "Z":  # exited, not reaped: kill(pid, 0) still succeeds
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(child.pid, 0)
    assert not alive(child.pid)
    child.wait()
    assert not alive(child.pid)


def test_a_process_of_another_user_is_alive() -> None:
    """kill(pid, 0) answers PermissionError for another user's process: it exists."""
    if os.geteuid() != 0:
        try:
            os.kill(1, 0)
            raise AssertionError("expected PermissionError for pid 1")
        except PermissionError:
            pass
        assert alive(1)
        return
    # As root: a child that drops to `nobody` looks at its root parent.
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                os.kill(os.getppid(), 0)
                code = 2  # no PermissionError: nothing was tested
            except PermissionError:
                code = 0 if alive(os.getppid()) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_sweep_removes_the_folders_of_dead_processes_only(tmp_path: Path) -> None:
    host = socket.gethostname()
    own = scratch.process_tmp_dir(str(tmp_path))
    assert own == tmp_path / "tmp" / f"{host}-{os.getpid()}"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    living = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        folders = {
            "dead": own.parent / f"{host}-{dead.pid}",
            "living": own.parent / f"{host}-{living.pid}",
            "other_host": own.parent / f"elsewhere-{dead.pid}",
        }
        for folder in folders.values():
            (folder / "task-1").mkdir(parents=True)
        scratch.sweep_stale(own)
        assert own.is_dir()
        assert not folders["dead"].exists()
        assert (folders["living"] / "task-1").is_dir()
        assert (folders["other_host"] / "task-1").is_dir()  # another host's processes are not ours to judge

        (own / "task-2").mkdir()
        scratch.sweep_stale(own)  # a second Worker in this process keeps the first one's files
        assert (own / "task-2").is_dir()
    finally:
        living.kill()
        living.wait()
