"""The memory budget of a task and the inflation limit, with the decompression bombs of the security
review: a 510 KB 8192 x 8192 RGBA 16-bit PNG (512 MiB of pixels) and a 260 KB .nii.gz that inflates
about 1,000-fold. Each is refused from its header, with a clear message, and the worker process's
peak memory (its VmHWM) stays under the budget; the estimate that decides is checked against the
real peak of every operation of the catalogue with its default params (on the larger of its input
and its result: an operation that enlarges checks its result against the budget itself)."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from services.processor.imaging import ImagingError, limits
from services.processor.operations import registry
from services.processor.pool import ProcessPool

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024**2
BUDGET = 512 * MIB


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_rgba16_bomb(path: Path, side: int = 8192) -> Path:
    """A PNG of zeros, 16 bits x 4 samples: 512 MiB of pixels in about half a megabyte."""
    deflate = zlib.compressobj(9)
    row = b"\x00" * (1 + side * 8)  # filter byte + the row
    idat = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def nifti_gz_bomb(path: Path, shape: tuple[int, int, int] = (256, 256, 1024)) -> Path:
    """A gzip NIfTI-1 of float32 zeros: 256 MiB of voxels in about 260 KB."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_qform(np.eye(4), code=1)
    header["vox_offset"] = 352
    zeros = bytes(16 * MIB)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header.binaryblock + b"\x00" * 4)
        for _ in range(int(np.prod(shape)) * 4 // len(zeros)):
            f.write(zeros)
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bombs")
    return {"png": png_rgba16_bomb(d / "rgba16.png"), "nifti": nifti_gz_bomb(d / "zeros.nii.gz")}


def _vm_hwm(pid: int) -> int:
    """Peak resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_the_bombs_are_refused_and_the_worker_stays_under_its_budget(
    bombs: dict[str, Path], tmp_path: Path
) -> None:
    assert bombs["png"].stat().st_size < 600_000 and bombs["nifti"].stat().st_size < 300_000
    pool = ProcessPool(1, memory_budget=BUDGET)
    await pool.start()
    try:
        (pid,) = list(pool._executor._processes)  # the one worker process

        async def progress(_pct: int, _step: str) -> None:
            return None

        messages = {}
        for name, path in bombs.items():
            with pytest.raises(ImagingError) as info:
                await pool.run_operation("blur", {}, str(path), str(tmp_path), "out", progress)
            messages[name] = str(info.value)
        peak = _vm_hwm(pid)
    finally:
        pool.shutdown()
    # The PNG inflates ~1,000-fold too; the NIfTI's header says what its gzip stream must inflate to.
    assert "suspicious compression ratio" in messages["png"] and "PNG image" in messages["png"]
    assert "gzip-compressed NIfTI" in messages["nifti"] and "200 times" in messages["nifti"]
    print(f"\nworker peak RSS with both bombs refused: {peak / MIB:.0f} MiB (budget {BUDGET / MIB:.0f} MiB)")
    assert peak < BUDGET


def test_the_memory_budget_alone_refuses_what_the_header_says_is_too_large(
    bombs: dict[str, Path], tmp_path: Path
) -> None:
    """Without the ratio check (an image that compresses poorly), the budget still refuses it, and
    its message says what it would take and what is allowed."""
    limits.set_memory_budget(BUDGET)
    try:
        with pytest.raises(ImagingError) as info:
            limits.check_memory("PNG image", 8192 * 8192 * 4, 2, "2d")
        assert "4,608 MiB" in str(info.value) and "512 MiB" in str(info.value)
        assert "RADIOLOGY_TASK_MEMORY_MB" in str(info.value)
        limits.check_memory("PNG image", 1024 * 1024 * 4, 1, "2d")  # 68 MiB: fine
        rng = np.random.default_rng(0)
        noisy = tmp_path / "noisy.png"  # incompressible: no inflation to speak of
        pixels = rng.integers(0, 255, (4096, 4096, 4), dtype=np.uint8)
        Image.fromarray(pixels, "RGBA").save(noisy, compress_level=1)
        from services.processor.imaging import load

        with pytest.raises(ImagingError, match="memory budget"):
            load(noisy)
    finally:
        limits.set_memory_budget(0)


# The operation once on a small input of the same kind first, so that every module it imports is
# in the baseline; then the peak above it (VmHWM is reset so it counts this run only).
_MEASURE = """
import json, sys, tempfile
from pathlib import Path
from services.processor import operations
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
operations.run(sys.argv[3], {}, sys.argv[2], tempfile.mkdtemp(), "warm")
Path("/proc/self/clear_refs").write_text("5")
base = status("VmRSS:")
result = operations.run(sys.argv[3], {}, sys.argv[1], tempfile.mkdtemp(), "out")
shape = result["metadata"]["shape"]
values = 1
for n in shape:
    values *= n
print(json.dumps([status("VmHWM:") - base, values]))
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, int, float, str]]:
    """(path, small path, decoded values, stored bytes per value, kind) of 2D and volume inputs."""
    d = tmp_path_factory.mktemp("measure")
    rng = np.random.default_rng(1)
    found = {}
    for name, shape, dtype, kind in [("grey16", (2048, 2048), np.uint16, "2d"),
                                     ("rgba", (1536, 1536, 4), np.uint8, "2d"),
                                     ("volume", (192, 192, 96), np.int16, "volume")]:
        paths = []
        for size, shape_ in (("", shape), ("small", tuple(max(4, n // 16) if n > 4 else n for n in shape))):
            values = rng.integers(0, 200, shape_, dtype=dtype)
            if kind == "volume":
                path = d / f"{name}{size}.nii"
                nib.save(nib.Nifti1Image(values, np.diag([0.8, 0.8, 1.5, 1])), path)
            else:
                path = d / f"{name}{size}.png"
                Image.fromarray(values, "RGBA" if values.ndim == 3 else None).save(path, compress_level=1)
            paths.append(path)
        found[name] = (paths[0], paths[1], int(np.prod(shape)), np.dtype(dtype).itemsize, kind)
    return found


# Each input as the catalogue names it (kind, format): only the pairs an operation accepts run.
_INPUT_ACCEPTS = {"grey16": ("2d", "png"), "rgba": ("2d", "png"), "volume": ("3d", "nifti")}


@pytest.mark.parametrize(
    ("task_type", "input_name"),
    [(op["name"], name) for op in registry.catalogue() for name, needs in _INPUT_ACCEPTS.items()
     if all(n in op["accepts"] for n in needs)],
)
def test_the_estimate_covers_the_real_peak_of_every_operation(
    inputs: dict[str, tuple[Path, Path, int, float, str]], task_type: str, input_name: str
) -> None:
    path, small, values, per_value, kind = inputs[input_name]
    run = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(small), task_type], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    peak, values_out = json.loads(run.stdout.strip().splitlines()[-1])
    # An operation whose result is larger (a resize up) checks the budget for its result too.
    work = registry.get(task_type).work_bytes or {}
    estimate = limits.estimated_peak_bytes(max(values, values_out), per_value, kind, work)
    print(f"\n{task_type} on {input_name}: peak {peak / MIB:.0f} MiB, estimate {estimate / MIB:.0f} MiB")
    assert peak <= estimate
