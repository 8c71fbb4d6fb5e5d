"""Each 3D operation of the processor's catalogue on a float32 volume (default 256^3): its median
time against the direct scipy / scikit-image / nibabel / numpy call doing the same maths on the same
array (interleaved, in the same run), and its peak memory against the float32 volume's size
(measured in a fresh child process per operation: growth of its VmHWM, and the
tracemalloc peak of numpy's allocations). Flags a time ratio over 1.3x and a peak over 3x.

    .venv/bin/python bench/operations_3d.py [--size 256] [--repeat 3] [--only blur,mip]
    .venv/bin/python bench/operations_3d.py --size 96        # quick mode
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage
from skimage.exposure import equalize_adapthist
from skimage.filters import threshold_otsu

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.processor.imaging import filters  # noqa: E402
from services.processor.imaging.image import Display, Image  # noqa: E402
from services.processor.imaging.io_nifti import write_nifti  # noqa: E402
from services.processor.operations import registry  # noqa: E402

MAX_RATIO = 1.3
MAX_PEAK = 3.0
SPACING = (0.9, 0.9, 1.2)
# LPS-like voxel order, as a DICOM series loads: reorient and mip have flips to do.
AFFINE = np.array(
    [[-SPACING[0], 0, 0, 115.0], [0, -SPACING[1], 0, 115.0], [0, 0, SPACING[2], -150.0], [0, 0, 0, 1]]
)

Pair = tuple[Callable[[], Any], Callable[[], Any]]


def volume(size: int) -> np.ndarray:
    """A CT-like float32 volume: noise of 20 HU around 0 and a 1000 HU ball; no float64 temporary."""
    data = np.random.default_rng(0).standard_normal((size, size, size), dtype=np.float32)
    data *= 20.0
    x, y = np.ogrid[:size, :size]
    centre, radius = (size - 1) / 2, size / 3
    for k in range(size):  # slab by slab: no full-size temporaries
        inside = (x - centre) ** 2 + (y - centre) ** 2 + (k - centre) ** 2 <= radius**2
        data[:, :, k][inside] += 1000.0
    return data


def grey_image(data: np.ndarray) -> Image:
    return Image(data=data, kind="volume", affine=AFFINE.copy(), spacing=SPACING, display=Display())


def apply(name: str, image: Image, **params: Any) -> Callable[[], Any]:
    op = registry.get(name)
    filled = registry.validate_params(name, params)
    return lambda: op.apply(image, filled)


def _case_grayscale(data: np.ndarray) -> Pair:
    # A grey volume is returned as it is: the work is for colour, here an RGB uint8 volume.
    rgb = np.empty(data.shape + (3,), np.uint8)
    for c in range(3):
        rgb[..., c] = np.clip(data[..., :] / 4.0 + 60 * c, 0, 255)
    image = Image(data=rgb, kind="volume", affine=AFFINE.copy(), samples="RGB", display=Display())

    def reference() -> np.ndarray:
        return np.clip(np.rint(rgb.astype(np.float32) @ filters.BT601), 0, 255).astype(np.uint8)

    return apply("grayscale", image), reference


def _sigmas(sigma_mm: float) -> tuple[float, ...]:
    return tuple(sigma_mm / s for s in SPACING)


def cases(data: np.ndarray, workdir: Path) -> dict[str, Callable[[], Pair]]:
    """name -> a builder of (ours, reference); built lazily so that a child builds only its own."""
    image = grey_image(data)
    new_shape = filters.shape_for_spacing(data.shape, SPACING, (2.0, 2.0, 2.0))
    zoom = [n / o for n, o in zip(new_shape, data.shape, strict=True)]

    def lo_hi() -> tuple[float, float]:
        return float(data.min()), float(data.max())

    def ref_window() -> np.ndarray:
        c, w = 40.0 - 0.5, 400.0 - 1.0
        grey = np.clip(((data.astype(np.float64) - c) / w + 0.5) * 255.0, 0.0, 255.0)
        return np.rint(grey).astype(np.uint8)

    def ref_normalize() -> np.ndarray:
        lo, hi = lo_hi()
        return ((data.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)

    def ref_sobel() -> np.ndarray:
        total = np.zeros(data.shape, np.float32)
        for axis in range(3):  # ndimage's Sobel is 2 x 4 x 4 = 32 times the normalised one
            d = ndimage.sobel(data, axis=axis, mode="reflect", output=np.float32)
            d /= np.float32(32 * SPACING[axis])
            total += d * d
        return np.sqrt(total)

    def ref_equalize() -> np.ndarray:
        lo, hi = lo_hi()
        return equalize_adapthist((data.astype(np.float64) - lo) / (hi - lo), clip_limit=0.01)

    def ref_threshold() -> np.ndarray:
        return (data >= threshold_otsu(data)).astype(np.uint8)

    def ref_reorient() -> np.ndarray:
        return np.ascontiguousarray(nib.as_closest_canonical(nib.Nifti1Image(data, AFFINE)).dataobj)

    def ours_convert() -> None:
        out = registry.get("convert").apply(image, registry.validate_params("convert", {"format": "nifti"}))
        write_nifti(out, workdir / "ours.nii")

    def ref_convert() -> None:
        nib.save(nib.Nifti1Image(data, AFFINE), workdir / "reference.nii")

    return {
        "blur": lambda: (
            apply("blur", image, sigma=2.0),
            lambda: ndimage.gaussian_filter(data, _sigmas(2.0), mode="reflect", output=np.float32),
        ),
        "blur sigma 8 (FFT)": lambda: (
            apply("blur", image, sigma=8.0),
            lambda: ndimage.gaussian_filter(data, _sigmas(8.0), mode="reflect", output=np.float32),
        ),
        "resize 2 mm": lambda: (
            apply("resize", image, spacing=2.0),
            lambda: ndimage.zoom(data, zoom, order=1, grid_mode=True, mode="nearest"),
        ),
        "grayscale (RGB)": lambda: _case_grayscale(data),
        "window 40/400": lambda: (apply("window", image, center=40, width=400), ref_window),
        "normalize minmax": lambda: (apply("normalize", image), ref_normalize),
        "denoise median 3": lambda: (
            apply("denoise", image),
            lambda: ndimage.median_filter(data, size=3, mode="reflect"),
        ),
        "edges sobel": lambda: (apply("edges", image), ref_sobel),
        "equalize": lambda: (apply("equalize", image), ref_equalize),
        "mip axial max": lambda: (apply("mip", image), lambda: np.nanmax(data, axis=2)),
        "threshold otsu": lambda: (apply("threshold", image), ref_threshold),
        "reorient": lambda: (apply("reorient", image), ref_reorient),
        "convert to .nii": lambda: (ours_convert, ref_convert),
    }


def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (ru_maxrss would not do: after a
    spawn it still holds the parent's peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_child(size: int, name: str, queue: Any) -> None:
    """In a fresh process: build the input and both calls, run ours once and report the growth of
    the peak RSS and the tracemalloc peak (numpy's allocations), then the reference's tracemalloc
    peak, in bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        ours, reference = cases(volume(size), Path(tmp))[name]()
        base = _status_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:  # 5: reset VmHWM to the current RSS
            f.write("5")
        tracemalloc.start()
        ours()
        traced = tracemalloc.get_traced_memory()[1]
        rss = _status_bytes("VmHWM") - base
        tracemalloc.reset_peak()
        reference()
        ref_traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    queue.put((rss, traced, ref_traced))


def peaks(size: int, name: str) -> tuple[int, int, int]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_peak_child, args=(size, name, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


@dataclass
class Row:
    name: str
    ours: float
    reference: float
    rss: int
    traced: int
    ref_traced: int


def _flag(value: float, over: bool, unit: str = "") -> str:
    return f"{value:.2f}{unit}" + (" **over**" if over else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="volume side in voxels (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each call (default 3)")
    parser.add_argument("--only", default="", help="comma-separated operation names (default: all)")
    parser.add_argument("--no-memory", action="store_true", help="skip the child-process memory runs")
    args = parser.parse_args()
    data = volume(args.size)
    nbytes = data.nbytes
    with tempfile.TemporaryDirectory() as tmp:
        builders = cases(data, Path(tmp))
        names = [n for n in builders if not args.only or any(n.startswith(o) for o in args.only.split(","))]
        rows = []
        start_all = time.perf_counter()
        for name in names:
            ours, reference = builders[name]()
            ours(), reference()  # warm-up: imports, caches
            times: tuple[list[float], list[float]] = ([], [])
            for _ in range(args.repeat):  # interleaved: both see the same machine
                for call, out in ((ours, times[0]), (reference, times[1])):
                    start = time.perf_counter()
                    call()
                    out.append(time.perf_counter() - start)
            rss = traced = ref_traced = 0
            if not args.no_memory:
                rss, traced, ref_traced = peaks(args.size, name)
            ours_s, reference_s = statistics.median(times[0]), statistics.median(times[1])
            rows.append(Row(name, ours_s, reference_s, rss, traced, ref_traced))
            print(f"  {name}: done", file=sys.stderr, flush=True)
    print(f"\nvolume {args.size}^3 float32 = {nbytes / 2**20:.0f} MiB, median of {args.repeat}, "
          f"{time.perf_counter() - start_all:.0f} s, load {os.getloadavg()[0]:.1f}\n")
    header = ["operation", "ours s", "reference s", "ratio"]
    if not args.no_memory:
        header += ["our peak (numpy)", "our peak (RSS)", "reference peak (numpy)"]
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    flagged = False
    for r in rows:
        ratio = r.ours / r.reference
        slow = ratio > MAX_RATIO
        heavy = max(r.traced, r.rss) / nbytes > MAX_PEAK
        flagged |= slow or heavy
        cells = [r.name, f"{r.ours:.3f}", f"{r.reference:.3f}", _flag(ratio, slow)]
        if not args.no_memory:
            cells += [_flag(r.traced / nbytes, r.traced / nbytes > MAX_PEAK, "x"),
                      _flag(r.rss / nbytes, r.rss / nbytes > MAX_PEAK, "x"), f"{r.ref_traced / nbytes:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    print(f"\ntargets: ratio <= {MAX_RATIO}, peak <= {MAX_PEAK}x the float32 volume")
    sys.exit(1 if flagged else 0)


if __name__ == "__main__":
    main()
