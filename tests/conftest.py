"""Shared fixtures: a real nats-server on a free port, a real S3-protocol server (moto), and the
PostgreSQL URL when CI provides one."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def _binary(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found; run `make venv`")
    return found


class NatsServer:
    """A nats-server with JetStream, for tests; `restart()` keeps its data."""

    def __init__(self, store: Path) -> None:
        self.port = free_port()
        self.store = store
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [_binary("nats-server"), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """host:port of a real S3-protocol server: RADIOLOGY_TEST_S3_ENDPOINT, or moto_server started here."""
    if endpoint := os.environ.get("RADIOLOGY_TEST_S3_ENDPOINT"):
        yield endpoint
        return
    port = free_port()
    proc = subprocess.Popen(
        [_binary("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, 30)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of a PostgreSQL test database; CI sets RADIOLOGY_TEST_POSTGRES_URL."""
    url = os.environ.get("RADIOLOGY_TEST_POSTGRES_URL")
    if not url and os.environ.get("RADIOLOGY_REQUIRE_POSTGRES"):
        pytest.fail("RADIOLOGY_REQUIRE_POSTGRES is set but RADIOLOGY_TEST_POSTGRES_URL is not")
    if not url:
        pytest.skip("PostgreSQL tests skipped: RADIOLOGY_TEST_POSTGRES_URL is not set (CI sets it)")
    return url


# Short redelivery so the kill-a-processor tests finish quickly.
PLATFORM_TEST_ENV = {
    "RADIOLOGY_ACK_WAIT_SECONDS": "4",
    "RADIOLOGY_RETRY_BACKOFF_SECONDS": "0.2",
    "RADIOLOGY_OUTBOX_INTERVAL_SECONDS": "1",
    "RADIOLOGY_SHUTDOWN_GRACE_SECONDS": "10",
    "RADIOLOGY_LOG_LEVEL": "INFO",
    # Small limits so the over-limit tests send little.
    "RADIOLOGY_MAX_FILES_PER_JOB": "12",
    "RADIOLOGY_MAX_FILE_BYTES": str(8 * 1024 * 1024),
    "RADIOLOGY_MAX_JOB_BYTES": str(12 * 1024 * 1024),
    # Tests submit many jobs as one user within a minute; tests/e2e/test_limits.py sets tight limits.
    "RADIOLOGY_RATE_LIMIT_PER_MINUTE": "600",
    "RADIOLOGY_RATE_LIMIT_BURST": "300",
}


def start_platform(data_dir: Path, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """The whole platform as `make run` starts it (nats-server + four processes), on free ports."""
    from tools.launcher import Platform, Ports

    platform = Platform(data_dir, Ports.free(), env={**PLATFORM_TEST_ENV, **(env or {})}, log_to_files=True)
    platform.start()
    return platform


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One shared running platform for tests that don't stop or kill parts of it."""
    p = start_platform(tmp_path_factory.mktemp("platform"))
    yield p
    p.stop()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = "/usr/bin/chromium"
    if not Path(path).exists():
        if os.environ.get("RADIOLOGY_REQUIRE_BROWSER"):
            pytest.fail("RADIOLOGY_REQUIRE_BROWSER is set but /usr/bin/chromium is missing")
        pytest.skip("browser tests skipped: /usr/bin/chromium is missing (CI installs it with apt-get)")
    return path
