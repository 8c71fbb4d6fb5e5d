"""The launcher (`make run`) takes its ports from the services' own variables and explains clashes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tools.launcher import ROOT, Ports, free_port


def test_ports_follow_the_service_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = {name: free_port() for name in ("http", "nats", "jobs", "storage", "processor")}
    monkeypatch.setenv("RADIOLOGY_HTTP_PORT", str(wanted["http"]))
    monkeypatch.setenv("RADIOLOGY_NATS_PORT", str(wanted["nats"]))
    for name in ("jobs", "storage", "processor"):
        monkeypatch.setenv(f"RADIOLOGY_{name.upper()}_ADDR", f"127.0.0.1:{wanted[name]}")
    ports = Ports.from_env()
    assert {n: getattr(ports, n) for n in wanted} == wanted
    assert ports.busy() == []


def test_taken_ports_are_named_with_their_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("RADIOLOGY_STORAGE_ADDR", f"127.0.0.1:{port}")
        assert f"{port} (RADIOLOGY_STORAGE_ADDR)" in Ports.from_env().busy()


def test_a_taken_default_metrics_port_is_replaced() -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("127.0.0.1", 9102))
        except OSError:
            pass  # already taken by something else: the point stands
        taken.listen()
        ports = Ports.from_env()
        assert ports.metrics["storage"] != 9102
        assert len(set(ports.metrics.values())) == 3


def test_a_service_whose_metrics_port_is_taken_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**os.environ, "RADIOLOGY_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT),
               "RADIOLOGY_STORAGE_ADDR": f"127.0.0.1:{free_port()}",
               "RADIOLOGY_METRICS_PORT": str(taken.getsockname()[1])}
        proc = subprocess.run([sys.executable, "-m", "services.storage.server"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "cannot serve metrics" in proc.stderr and "RADIOLOGY_METRICS_PORT" in proc.stderr
    assert "Traceback" not in proc.stderr
