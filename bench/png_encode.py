"""PNG encoding of a 512x512 8-bit result (the `png` scenario of throughput.py, blurred): time and
size per encoder and deflate level, measured side by side in one run. Every output is checked to
decode back to the same pixels.

    .venv/bin/python bench/png_encode.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _pillow(level: int) -> Callable[[np.ndarray], bytes]:
    def encode(a: np.ndarray) -> bytes:
        out = io.BytesIO()
        Image.fromarray(a).save(out, format="PNG", compress_level=level)
        return out.getvalue()
    return encode


def _imagecodecs(level: int) -> Callable[[np.ndarray], bytes]:
    return lambda a: imagecodecs.png_encode(a, level=level)


def _processor(a: np.ndarray) -> bytes:
    from services.processor.imaging.io_raster import encode_png

    return encode_png(a, "L")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    noise = np.random.default_rng(0).integers(0, 256, (512, 512), dtype=np.uint8)
    image = np.clip(np.rint(ndimage.gaussian_filter(noise.astype(np.float32), 1.0)), 0, 255).astype(np.uint8)
    encoders = {f"pillow level {lv}": _pillow(lv) for lv in (1, 6)}
    encoders.update({f"imagecodecs level {lv}": _imagecodecs(lv) for lv in (1, 6)})
    encoders["processor (1, Paeth, RLE)"] = _processor
    times: dict[str, list[float]] = {name: [] for name in encoders}
    sizes: dict[str, int] = {}
    for _ in range(args.repeat):  # interleaved: every encoder sees the same machine
        for name, encode in encoders.items():
            start = time.perf_counter()
            data = encode(image)
            times[name].append(time.perf_counter() - start)
            sizes[name] = len(data)
    for name, encode in encoders.items():
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode(image)))), image), name
    base = statistics.median(times["pillow level 1"])
    print(f"{'encoder':<26} {'median ms':>10} {'vs pillow 1':>12} {'bytes':>9}")
    for name in encoders:
        med = statistics.median(times[name])
        print(f"{name:<26} {med * 1000:>10.2f} {med / base:>11.2f}x {sizes[name]:>9}")


if __name__ == "__main__":
    main()
