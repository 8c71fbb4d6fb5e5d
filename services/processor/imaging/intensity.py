"""Intensity maps: the DICOM linear window to 8-bit grey, normalisation, CLAHE (in `clahe.py`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import clahe as _clahe
from .filters import BLOCK_VALUES

# Common display windows (center, width) in Hounsfield units; the names are the catalogue's.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
    "soft_tissue": (40.0, 400.0),
}


def window_uint8(values: np.ndarray, center: float, width: float, invert: bool = False) -> np.ndarray:
    """The DICOM "LINEAR" window function (PS3.3 C.11.2.1.2.1) onto 0..255, rounded to uint8.

    Computed in float64, in blocks (no full-size float64 temporary), so the result is the
    standard's formula exactly; ``invert`` shows high values dark (MONOCHROME1).
    """
    if width < 1:
        raise ValueError("the window width must be at least 1")
    c, w = float(center) - 0.5, float(width) - 1.0

    def window(x: np.ndarray, part: np.ndarray) -> None:
        if w == 0:  # width 1: a threshold at the center
            x[...] = np.where(part <= c, 0.0, 255.0)
            if invert:
                np.subtract(255.0, x, out=x)
        else:  # the formula's own steps and order, in place
            x[...] = part
            x -= c
            x /= w
            x += 0.5
            x *= 255.0
            if invert:  # before clipping: 255 - clip(v) = clip(255 - v) on 0..255
                np.subtract(255.0, x, out=x)
            np.fmax(x, 0.0, out=x)  # fmax/fmin clip and send NaN to 0 (black)
            np.fmin(x, 255.0, out=x)
        np.rint(x, out=x)

    return _blockwise(values, np.uint8, window)


def _blockwise(values: np.ndarray, dtype: Any,
               compute: Callable[[np.ndarray, np.ndarray], None]) -> np.ndarray:
    """A new array of `dtype` filled block by block: `compute(x, part)` sets the float64 buffer
    `x` from the block `part` of the values (one buffer, reused: no full-size float64 temporary)."""
    out = np.empty(values.shape, dtype)
    source, target = values.reshape(-1), out.reshape(-1)
    block = np.empty(min(source.size, BLOCK_VALUES), np.float64)
    for start in range(0, source.size, BLOCK_VALUES):
        part = source[start : start + BLOCK_VALUES]
        x = block[: part.size]
        compute(x, part)
        target[start : start + part.size] = x
    return out


def _finite(values: np.ndarray) -> np.ndarray:
    """The finite values, flat: a view when they all are (no full-size copy)."""
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            return values[finite]
    return values.reshape(-1)


def normalize(
    values: np.ndarray, method: str, low: float = 1.0, high: float = 99.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Float32 values normalised over every finite voxel, and the statistics used.

    minmax: (v - min) / (max - min), 0..1. zscore: (v - mean) / std (population std, ddof 0).
    percentile: clipped to the ``low`` and ``high`` percentiles (in percent, numpy's linear
    interpolation), then mapped to 0..1. A constant image gives zeros; NaN stays NaN.
    """
    finite = _finite(values)
    if finite.size == 0:
        raise ValueError("the image has no finite values to normalise")
    if method == "zscore":
        mean = float(np.mean(finite, dtype=np.float64))
        std = float(np.std(finite, dtype=np.float64))
        return _affine_float32(values, mean, std, None), {"mean": mean, "std": std}
    clip: tuple[float, float] | None = None
    if method == "minmax":
        lo, hi = float(finite.min()), float(finite.max())
        facts = {"min": lo, "max": hi}
    elif method == "percentile":
        if not 0 <= low < high <= 100:
            raise ValueError("percentiles need 0 <= low < high <= 100")
        lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
        clip = (lo, hi)
        facts = {"low_value": lo, "high_value": hi, "low_percent": low, "high_percent": high}
    else:
        raise ValueError(f"unknown normalisation {method!r}")
    return _affine_float32(values, lo, hi - lo, clip), facts


def _affine_float32(
    values: np.ndarray, shift: float, scale: float, clip: tuple[float, float] | None
) -> np.ndarray:
    """float32 of (clip(values) - shift) / scale (not divided when scale <= 0), computed in float64
    block by block: no full-size float64 temporary."""

    def affine(x: np.ndarray, part: np.ndarray) -> None:
        x[...] = part
        if clip is not None:
            np.clip(x, clip[0], clip[1], out=x)
        x -= shift
        if scale > 0:
            x /= scale

    return _blockwise(values, np.float32, affine)


def clahe(values: np.ndarray, clip_limit: float, kernel_size: int | None, colour: bool = False) -> np.ndarray:
    """Contrast Limited Adaptive Histogram Equalisation, the same as scikit-image's
    ``equalize_adapthist`` (see `clahe.py`), of a grey image or volume of any units, or of an RGB
    image (on its HSV value, as scikit-image does).

    Grey values are first mapped from their finite min..max onto 0..1 (NaN and -inf as the minimum,
    +inf as the maximum); ``clip_limit`` is scikit-image's, normalised 0..1; ``kernel_size`` is the
    side of the contextual regions in pixels/voxels (None: 1/8 of each axis), capped at each axis'
    length. Returns float32 in 0..1.
    """
    spatial = values.shape[:-1] if colour else values.shape
    kernel = None if kernel_size is None else tuple(max(1, min(int(kernel_size), n)) for n in spatial)
    if colour:  # scikit-image's RGB path: CLAHE of the HSV value (2D images only: small)
        from skimage.color import hsv2rgb, rgb2hsv

        hsv = rgb2hsv(values[..., :3])
        hsv[..., 2] = _clahe.equalize(hsv[..., 2], kernel, float(clip_limit), dtype=np.float64)
        return hsv2rgb(hsv).astype(np.float32)
    return _clahe.equalize_range(values, kernel, float(clip_limit))
