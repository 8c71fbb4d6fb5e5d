"""Pure array maths for the seed operations: Gaussian blur, linear resampling, grey conversion."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

# ITU-R BT.601 luma weights for R, G, B.
BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def gaussian_blur(data: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """Gaussian blur with one sigma (in voxels) per axis; 0 leaves an axis alone. Returns float32."""
    if len(sigmas) != data.ndim:
        raise ValueError(f"need {data.ndim} sigmas, got {len(sigmas)}")
    source = data if data.dtype == np.float32 else data.astype(np.float32)
    return ndimage.gaussian_filter(source, sigma=list(sigmas), output=np.float32, mode="reflect")


def sigmas_in_voxels(sigma_mm: float, spacing: Sequence[float]) -> tuple[float, ...]:
    """A physical sigma (mm) expressed along each voxel axis of the given spacing (mm)."""
    return tuple(float(sigma_mm) / float(s) if s > 0 else float(sigma_mm) for s in spacing)


def resample_linear(data: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Linear interpolation of the leading len(shape) axes to ``shape``, separable, float32.

    Pixel centres are aligned so that the field of view is kept (the edges of the first and last
    pixels stay where they were), like Pillow's and OpenCV's resize.
    """
    out = data if data.dtype == np.float32 else data.astype(np.float32)
    for axis, n_out in enumerate(shape):
        out = _resample_axis(out, axis, int(n_out))
    return out


def _resample_axis(data: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    n_in = data.shape[axis]
    if n_in == n_out:
        return data
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0.0, n_in - 1)
    i0 = np.floor(x).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    weight_shape = [1] * data.ndim
    weight_shape[axis] = n_out
    w = (x - i0).astype(np.float32).reshape(weight_shape)
    a0 = np.take(data, i0, axis=axis)
    a1 = np.take(data, i1, axis=axis)
    a1 -= a0
    a1 *= w
    a0 += a1
    return a0


def fit_inside(width: int, height: int, box_width: int, box_height: int) -> tuple[int, int]:
    """Largest (width, height) with the same aspect ratio that fits in the box."""
    scale = min(box_width / width, box_height / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def shape_for_spacing(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> tuple[int, ...]:
    """Voxel counts that cover the same extent at (about) the target spacing."""
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of the first three samples of the last axis, float32."""
    return np.tensordot(rgb[..., :3].astype(np.float32, copy=False), BT601, axes=([-1], [0]))


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float results back to an integer dtype (rounded, clipped to its range); floats pass through."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iub":
        return values.astype(dtype, copy=False)
    if dtype.kind == "b":
        return values >= 0.5
    info = np.iinfo(dtype)
    out = np.rint(values)
    np.clip(out, info.min, info.max, out=out)
    return out.astype(dtype)


def integral_dtype(values: np.ndarray) -> np.dtype | None:
    """The smallest of int16/uint16/int32 holding ``values`` exactly, or None when they are not whole."""
    if values.dtype.kind in "iu":
        lo, hi = int(values.min(initial=0)), int(values.max(initial=0))
    else:
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.rint(values)):
            return None
        lo, hi = float(values.min(initial=0)), float(values.max(initial=0))
    for candidate in (np.int16, np.uint16, np.int32):
        info = np.iinfo(candidate)
        if info.min <= lo and hi <= info.max:
            return np.dtype(candidate)
    return None


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the value that best splits the histogram of the finite values into two
    classes (maximum between-class variance). A constant image returns its value."""
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
    if finite.size == 0:
        raise ValueError("no finite values to threshold")
    low, high = float(finite.min()), float(finite.max())
    if low == high:
        return low
    counts, edges = np.histogram(finite, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_below = np.cumsum(counts, dtype=np.float64)
    weight_above = weight_below[-1] - weight_below
    sum_below = np.cumsum(counts * centres)
    mean_below = sum_below / np.maximum(weight_below, 1)
    mean_above = (sum_below[-1] - sum_below) / np.maximum(weight_above, 1)
    between = weight_below * weight_above * (mean_below - mean_above) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def band_mask(values: np.ndarray, lower: float | None, upper: float | None) -> np.ndarray:
    """True where lower <= value <= upper (a missing bound is open); NaN is never inside."""
    mask = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, dtype=bool)
    if lower is not None:
        mask &= values >= lower
    if upper is not None:
        mask &= values <= upper
    return mask
