"""A large upload and download stream through the real gateway and storage without either holding
the file in memory."""

from __future__ import annotations

import hashlib

import httpx

from tests.conftest import start_platform
from tests.e2e.conftest import png_bytes, wait_job

SIZE = 512 * 1024 * 1024
CHUNK = 1024 * 1024


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):  # peak resident set size, in kB
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_half_a_gigabyte_upload_and_download_keep_memory_flat(tmp_path) -> None:
    platform = start_platform(tmp_path / "data", env={
        "RADIOLOGY_MAX_FILE_BYTES": str(SIZE + CHUNK),
        "RADIOLOGY_MAX_JOB_BYTES": str(SIZE + CHUNK),
    })
    try:
        pids = {name: platform.procs[name].pid for name in ("gateway", "storage")}
        before = {name: _peak_rss_mib(pid) for name, pid in pids.items()}
        head = png_bytes()  # a real PNG signature, then far more bytes than the image needs
        digest = hashlib.sha256(head)
        boundary = "bigboundary"
        preamble = (f"--{boundary}\r\n"
                    'Content-Disposition: form-data; name="files"; filename="big.png"\r\n'
                    "Content-Type: image/png\r\n\r\n").encode()
        epilogue = f"\r\n--{boundary}--\r\n".encode()

        def body():  # type: ignore[no-untyped-def]
            yield preamble + head
            block = b"\x00" * CHUNK
            sent = len(head)
            while sent < SIZE:
                part = block[: min(CHUNK, SIZE - sent)]
                digest.update(part)
                sent += len(part)
                yield part
            yield epilogue

        with httpx.Client(base_url=platform.base_url, headers={"X-User-ID": "big"}, timeout=300) as c:
            r = c.post("/jobs", content=body(),
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            assert r.status_code == 202, r.text
            job = wait_job(c, r.json()["job_id"], timeout=300)
            # The bytes arrived whole: same size and hash as sent, read back with a ranged GET.
            url = f"/files/big/{job['job_id']}/big.png"
            assert c.head(url).headers["content-length"] == str(SIZE)
            tail = c.get(url, headers={"Range": f"bytes={SIZE - 10}-"})
            assert tail.status_code == 206 and tail.content == b"\x00" * 10
            stored = platform.data_dir / "objects" / "data" / "big" / job["job_id"] / "big.png"
            h = hashlib.sha256()
            with stored.open("rb") as f:
                while block := f.read(CHUNK * 8):
                    h.update(block)
            assert h.hexdigest() == digest.hexdigest()
            for name, pid in pids.items():
                grew = _peak_rss_mib(pid) - before[name]
                assert grew < 80, f"{name} peak memory grew by {grew:.0f} MiB for a {SIZE >> 20} MiB upload"

            # And the whole file streams back out the same way.
            for pid in pids.values():
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")  # resets the peak (VmHWM) to the current size
            before = {name: _peak_rss_mib(pid) for name, pid in pids.items()}
            back, received = hashlib.sha256(), 0
            with c.stream("GET", url) as resp:
                assert resp.status_code == 200
                for block in resp.iter_bytes(CHUNK):
                    back.update(block)
                    received += len(block)
            assert received == SIZE and back.hexdigest() == digest.hexdigest()
            for name, pid in pids.items():
                grew = _peak_rss_mib(pid) - before[name]
                assert grew < 60, f"{name} peak memory grew by {grew:.0f} MiB for a {SIZE >> 20} MiB download"
    finally:
        platform.stop()
