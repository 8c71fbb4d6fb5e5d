"""A large upload streams through the gateway: its memory must not grow with the upload size."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.conftest import ROOT, free_port
from tests.gateway.fakes import Fakes
from tests.gateway.helpers import PNG

MIB = 1024 * 1024
UPLOAD_MIB = 300
BOUNDARY = "memtestboundary"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def body(mib: int) -> AsyncIterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + PNG
    block = os.urandom(MIB)
    for _ in range(mib):
        yield block
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def test_300_mib_upload_keeps_gateway_memory_flat(fakes: Fakes, tmp_path: Path) -> None:
    fakes.storage.keep_data = False  # the fake counts and hashes; it does not keep 300 MiB
    port = free_port()
    env = {
        **os.environ,
        "RADIOLOGY_HTTP_PORT": str(port),
        "RADIOLOGY_JOBS_ADDR": fakes.addrs["jobs"],
        "RADIOLOGY_STORAGE_ADDR": fakes.addrs["storage"],
        "RADIOLOGY_PROCESSOR_ADDR": fakes.addrs["processor"],
        "RADIOLOGY_DATA_DIR": str(tmp_path),
        "RADIOLOGY_WEB_DIR": str(tmp_path / "no-web"),
        "RADIOLOGY_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.gateway.server"], cwd=ROOT, env=env)
    headers = {"X-User-ID": "alice", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(200):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            # Warm up every code path once, so that the baseline includes imports and caches.
            warm = await client.post("/jobs", content=body(4), headers=headers)
            assert warm.status_code == 202, warm.text
            baseline = rss_bytes(proc.pid)
            peak = baseline

            async def sample() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, rss_bytes(proc.pid))
                    await asyncio.sleep(0.02)

            sampler = asyncio.create_task(sample())
            resp = await client.post("/jobs", content=body(UPLOAD_MIB), headers=headers)
            sampler.cancel()
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["job_id"]
        stored = fakes.storage.objects[f"alice/{job_id}/big.png"]
        assert stored.size == len(PNG) + UPLOAD_MIB * MIB
        growth = peak - baseline
        print(f"gateway RSS baseline {baseline / MIB:.1f} MiB, growth {growth / MIB:.1f} MiB")
        assert growth < 60 * MIB, f"gateway RSS grew by {growth / MIB:.1f} MiB for a {UPLOAD_MIB} MiB upload"
    finally:
        proc.terminate()
        proc.wait(10)
