"""`python -m services.storage.server` as its own process: health, a real call, SIGTERM, bad config."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.gen.radiology.v1 import storage_pb2, storage_pb2_grpc

from .helpers import free_port_closed

ROOT = Path(__file__).resolve().parents[2]


def start(tmp_path: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.storage.server"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_server_serves_health_and_storage_then_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port_closed()
    proc = start(tmp_path, RADIOLOGY_STORAGE_ADDR=f"127.0.0.1:{port}",
                 RADIOLOGY_STORAGE_URL="file://store")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 20)  # the process listens
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(
                service="radiology.v1.StorageService"), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

            stub = storage_pb2_grpc.StorageServiceStub(channel)
            info = await stub.Put(iter([
                storage_pb2.PutRequest(header=storage_pb2.PutHeader(key="u/j/hello.txt",
                                                                    content_type="text/plain")),
                storage_pb2.PutRequest(chunk=b"hello "),
                storage_pb2.PutRequest(chunk=b"world"),
            ]), timeout=10)
            assert info.size == 11
        # The relative file:// URL resolves against the working directory.
        assert (tmp_path / "store/data/u/j/hello.txt").read_bytes() == b"hello world"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr.decode()
    assert b'"service": "storage"' in stderr  # JSON log lines


def test_bad_storage_url_exits_with_a_clear_message(tmp_path: Path) -> None:
    proc = start(tmp_path, RADIOLOGY_STORAGE_URL="ftp://nowhere/x",
                 RADIOLOGY_STORAGE_ADDR=f"127.0.0.1:{free_port_closed()}")
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert b"storage URL 'ftp://nowhere/x' must start with file:// or s3://" in stderr
    assert b"Traceback" not in stderr
