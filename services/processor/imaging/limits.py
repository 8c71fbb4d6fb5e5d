"""How large an input may be, checked from its header before any pixel is decoded.

A few hundred kilobytes of compressed zeros can claim gigabytes of pixels; these limits keep one
upload's decoded size (and with it a worker's memory) bounded: fixed sizes, an inflation ratio for
every compressed input, and the task's memory budget (RADIOLOGY_TASK_MEMORY_MB), against which
each reader checks its estimate of the task's peak memory (see `estimated_peak_bytes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import ImagingError

MAX_IMAGE_SIDE = 8192  # 2D: rows and columns each
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
MAX_VOLUME_SHAPE = (512, 512, 1024)
MAX_VOLUME_VOXELS = math.prod(MAX_VOLUME_SHAPE)  # voxels x frames x samples: 256 Mi
MAX_VOLUME_SIDE = 32767  # NIfTI-1, the format of volume results, stores each dimension as int16

# Compressed data (ZIP members, deflated DICOM; PNG and JPEG images, gzip NIfTI, compressed DICOM
# pixel data): beyond this many times its compressed size, once larger than the floor, it is
# treated as a decompression bomb. Images have a higher floor: flat synthetic images of a few
# megapixels (masks, test patterns) compress that well, and the memory budget bounds them anyway.
MAX_INFLATE_RATIO = 200
INFLATE_RATIO_FLOOR = 1024**2
IMAGE_INFLATE_RATIO_FLOOR = 64 * 1024**2

# Peak memory of a task per decoded value (pixel x frame x sample) on top of the stored bytes:
# decoding, conversion to floating point, the operation's working copies and the written outputs.
# Measured with the operations of the catalogue (peak RSS of operations.run in a fresh process,
# minus the interpreter's): at most ~12 bytes a value for 2D images (a Gaussian blur of 16-bit
# grey) and ~44 for volumes (a resampling: float64 coordinate grids); with a margin.
WORK_BYTES_PER_VALUE = {"2d": 16, "volume": 48}
# Set in each worker process from RADIOLOGY_TASK_MEMORY_MB (pool.py); 0: no budget.
_memory_budget = 0
# The running task's operation's own figures where they exceed the defaults (set by the runner).
_work_bytes: dict[str, int] = {}


def set_work_bytes(per_kind: dict[str, int] | None) -> None:
    """The working bytes per value of the operation the next inputs are decoded for (None: defaults)."""
    _work_bytes.clear()
    _work_bytes.update(per_kind or {})


def set_memory_budget(budget_bytes: int) -> None:
    global _memory_budget
    _memory_budget = max(0, int(budget_bytes))


def memory_budget() -> int:
    return _memory_budget


def estimated_peak_bytes(values: int, stored_bytes_per_value: float, kind: str,
                         work_bytes: dict[str, int] | None = None) -> int:
    """What a task on an input of `values` decoded values, stored with this many bytes each, is
    expected to use at most (`work_bytes`: an operation's own figures; default: the running one's)."""
    work = (work_bytes if work_bytes is not None else _work_bytes).get(kind, WORK_BYTES_PER_VALUE[kind])
    return int(values * (stored_bytes_per_value + work))


def check_memory(what: str, values: int, stored_bytes_per_value: float, kind: str) -> None:
    """Refuse an input whose task would need more than the memory budget, before decoding it."""
    peak = estimated_peak_bytes(values, stored_bytes_per_value, kind)
    if _memory_budget and peak > _memory_budget:
        mib = 1024**2
        raise ImagingError(
            f"{what} is too large to process within this server's memory budget: {values:,} values "
            f"need about {peak / mib:,.0f} MiB, and a task may use {_memory_budget / mib:,.0f} MiB "
            "(RADIOLOGY_TASK_MEMORY_MB)"
        )


def _times(sizes: Sequence[int]) -> str:
    return " x ".join(str(int(n)) for n in sizes)


def check_image_size(what: str, rows: int, columns: int) -> None:
    """Refuse a 2D image without pixels or with a side longer than MAX_IMAGE_SIDE."""
    if rows < 1 or columns < 1:
        raise ImagingError(f"{what} has no pixels: its size is {columns} x {rows}")
    if rows > MAX_IMAGE_SIDE or columns > MAX_IMAGE_SIDE:
        raise ImagingError(
            f"{what} is {columns} x {rows} pixels; at most {MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE} are accepted"
        )


def check_volume_size(what: str, shape: Sequence[int], samples: int = 1) -> None:
    """Refuse a volume (any number of axes) with an empty axis, an axis longer than MAX_VOLUME_SIDE or
    more than MAX_VOLUME_VOXELS values."""
    if any(int(n) < 1 for n in shape):
        raise ImagingError(f"{what} has an empty or negative dimension: its shape is {_times(shape)}")
    if any(int(n) > MAX_VOLUME_SIDE for n in shape):
        raise ImagingError(
            f"{what} is {_times(shape)} voxels; at most {MAX_VOLUME_SIDE} are accepted along each axis"
        )
    values = math.prod(int(n) for n in shape) * max(int(samples), 1)
    if values > MAX_VOLUME_VOXELS:
        per_voxel = f" x {samples} samples" if samples > 1 else ""
        raise ImagingError(
            f"{what} is {_times(shape)} voxels{per_voxel} ({values:,} values); at most "
            f"{MAX_VOLUME_VOXELS:,} ({_times(MAX_VOLUME_SHAPE)}) are accepted"
        )


def check_inflated_size(what: str, inflated: int, compressed: int, floor: int = INFLATE_RATIO_FLOOR) -> None:
    """Refuse a compressed stream that expands suspiciously much (a decompression bomb)."""
    if inflated > floor and inflated > MAX_INFLATE_RATIO * max(compressed, 1):
        raise ImagingError(
            f"{what} has a suspicious compression ratio: it expands more than {MAX_INFLATE_RATIO} "
            "times (a decompression bomb?)"
        )
