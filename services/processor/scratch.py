"""Scratch folders: one per processor process under "<data_dir>/tmp", and the sweeper that removes
what processes killed on this host left behind."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from services.processor.pids import alive

_swept: set[Path] = set()


def process_tmp_dir(data_dir: str) -> Path:
    """This process's scratch folder: "<data_dir>/tmp/<host>-<pid>"."""
    return Path(data_dir) / "tmp" / f"{socket.gethostname()}-{os.getpid()}"


def sweep_stale(own: Path) -> None:
    """Remove the folders of this host's dead processes (and our own, if its pid was reused), so
    that a crash does not leak temp files; then create our own. Blocking: run it in a thread."""
    host = socket.gethostname()
    for folder in own.parent.glob(f"{host}-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        # Our own folder only once per process: a second Worker here must not wipe the first's.
        if (folder == own and own not in _swept) or (pid.isdigit() and not alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
    _swept.add(own)
    own.mkdir(parents=True, exist_ok=True)
