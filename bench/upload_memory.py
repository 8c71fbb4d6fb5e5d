"""Memory and speed of one very large upload and its download, through the real gateway and storage.

Starts the platform as `make run` does (free loopback ports, data in a temporary folder that is
removed afterwards), then streams one multipart upload of --size bytes (default 2 GiB: a PNG
signature followed by pseudo-random bytes, so nothing compresses or deduplicates) to `POST /jobs`,
reads it back with `GET /files/...`, and checks the sha256 both ways. It prints, for the gateway and
the storage service, the growth of their peak resident memory (VmHWM from /proc) during the upload
and during the download, the MB/s of each, and the ratios growth / size. The processor's task on the
file fails quickly (the bytes after the signature are not a PNG): that is expected and not measured.

    .venv/bin/python bench/upload_memory.py                 # 2 GiB
    .venv/bin/python bench/upload_memory.py --size-mib 512
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from tools.launcher import Platform, Ports  # noqa: E402

MIB = 1024 * 1024
BLOCK = 4 * MIB
BOUNDARY = "bench-boundary-7f3a"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def reset_peak(pid: int) -> None:
    """Start a new VmHWM measurement (writing 5 to clear_refs resets the peak, Linux >= 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def multipart_body(size: int, digest: hashlib._Hash) -> Iterator[bytes]:
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="files"; filename="huge.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    rng = np.random.default_rng(7)
    digest.update(PNG_SIGNATURE)
    yield head + PNG_SIGNATURE
    sent = len(PNG_SIGNATURE)
    while sent < size:
        n = min(BLOCK, size - sent)
        block = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        digest.update(block)
        sent += n
        yield block
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=2048, help="upload size in MiB (default 2048)")
    parser.add_argument("--timeout", type=float, default=900, help="bound on the whole run, seconds")
    args = parser.parse_args()
    size = args.size_mib * MIB

    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        env = {"RADIOLOGY_MAX_FILE_BYTES": str(size + MIB), "RADIOLOGY_MAX_JOB_BYTES": str(size + MIB)}
        platform = Platform(Path(tmp) / "data", Ports.free(), env=env, log_to_files=True)
        platform.start()
        try:
            pids = {name: platform.procs[name].pid for name in ("gateway", "storage")}
            client = httpx.Client(base_url=platform.base_url, headers={"X-User-ID": "bench"},
                                  timeout=args.timeout)
            with client:
                client.get("/readyz").raise_for_status()
                rows = []

                for pid in pids.values():
                    reset_peak(pid)
                base = {n: peak_rss_mib(p) for n, p in pids.items()}
                sent = hashlib.sha256()
                start = time.perf_counter()
                r = client.post("/jobs", content=multipart_body(size, sent),
                                headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
                up_s = time.perf_counter() - start
                if r.status_code != 202:
                    print(f"upload refused: {r.status_code} {r.text}", file=sys.stderr)
                    return 1
                up_peak = {n: peak_rss_mib(p) for n, p in pids.items()}
                url = f"/files/bench/{r.json()['job_id']}/huge.png"

                for pid in pids.values():
                    reset_peak(pid)
                down_base = {n: peak_rss_mib(p) for n, p in pids.items()}
                got = hashlib.sha256()
                start = time.perf_counter()
                received = 0
                with client.stream("GET", url) as resp:
                    resp.raise_for_status()
                    for chunk in resp.iter_bytes(BLOCK):
                        got.update(chunk)
                        received += len(chunk)
                down_s = time.perf_counter() - start
                down_peak = {n: peak_rss_mib(p) for n, p in pids.items()}

                for name in pids:
                    rows.append((name, base[name], up_peak[name] - base[name],
                                 down_base[name], down_peak[name] - down_base[name]))
        finally:
            platform.stop()

    intact = received == size and got.hexdigest() == sent.hexdigest()
    print(f"upload   {size / MIB:.0f} MiB in {up_s:.1f} s = {size / MIB / up_s:.0f} MiB/s")
    print(f"download {received / MIB:.0f} MiB in {down_s:.1f} s = {received / MIB / down_s:.0f} MiB/s")
    print(f"sha256 sent == stored == downloaded: {intact}")
    print(f"{'service':<10}{'RSS before':>12}{'upload +peak':>14}{'ratio':>9}"
          f"{'download +peak':>16}{'ratio':>9}")
    for name, before, up, _, down in rows:
        print(f"{name:<10}{before:>10.0f}Mi{up:>12.1f}Mi{up * MIB / size:>9.4f}"
              f"{down:>14.1f}Mi{down * MIB / size:>9.4f}")
    return 0 if intact else 1


if __name__ == "__main__":
    raise SystemExit(main())
