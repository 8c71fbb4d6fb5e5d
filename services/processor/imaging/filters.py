"""Pure array maths for the seed operations: Gaussian blur, linear resampling, grey conversion."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft
from scipy import ndimage

# ITU-R BT.601 luma weights for R, G, B.
BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# Blurred with sigma = 2n, the mirrored signal of an axis of n voxels keeps exp(-2 pi^2) < 3e-9 of
# its slowest variation: the result is the axis mean to float32 precision, so sigma is capped there.
MAX_SIGMA_PER_VOXEL = 2.0
# Kernels with more taps than this are applied through the FFT, whose cost does not grow with sigma.
MAX_DIRECT_TAPS = 64
BLOCK_VALUES = 4 * 1024**2  # values processed at once where a full-size temporary is avoided


def effective_sigmas(sigmas: Sequence[float], shape: Sequence[int]) -> tuple[float, ...]:
    """Sigmas (voxels) capped at MAX_SIGMA_PER_VOXEL times their axis length: a wider Gaussian
    gives the same result, the mean along that axis."""
    return tuple(min(float(s), MAX_SIGMA_PER_VOXEL * n) for s, n in zip(sigmas, shape, strict=True))


def gaussian_blur(data: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """Gaussian blur with one sigma (in voxels) per axis; 0 leaves an axis alone. Returns float32.

    The same as ``ndimage.gaussian_filter`` (mode "reflect", kernel truncated at 4 sigma), with the
    sigmas capped by ``effective_sigmas`` and long kernels applied through the FFT, so that the cost
    stays bounded however large sigma is.
    """
    if len(sigmas) != data.ndim:
        raise ValueError(f"need {data.ndim} sigmas, got {len(sigmas)}")
    out = data.astype(np.float32)  # the one full-size copy: each axis is blurred in place
    for axis, sigma in enumerate(effective_sigmas(sigmas, data.shape)):
        if sigma <= 0:
            continue
        if 2 * _radius(sigma) + 1 <= MAX_DIRECT_TAPS:
            ndimage.gaussian_filter1d(out, sigma, axis=axis, output=out, mode="reflect")
        else:
            _blur_axis_fft(out, sigma, axis)
    return out


def _radius(sigma: float) -> int:
    return int(4.0 * sigma + 0.5)  # ndimage's default truncation


def _blur_axis_fft(data: np.ndarray, sigma: float, axis: int) -> None:
    """In place, ndimage's reflect-mode Gaussian along one axis: a circular convolution of the
    mirrored signal (period 2n) with the kernel wrapped onto that period."""
    if data.ndim == 1:
        _blur_axis_fft(data[np.newaxis], sigma, 1)
        return
    n = data.shape[axis]
    taps = np.arange(-_radius(sigma), _radius(sigma) + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    wrapped = np.bincount(taps % (2 * n), weights=kernel / kernel.sum(), minlength=2 * n)
    gain = scipy.fft.rfft(wrapped).real.astype(np.float32)  # a symmetric kernel: a real spectrum
    gain = gain.reshape([-1 if a == axis else 1 for a in range(data.ndim)])
    other = max((a for a in range(data.ndim) if a != axis), key=lambda a: data.shape[a])
    step = max(1, BLOCK_VALUES * data.shape[other] // max(data.size, 1))
    for start in range(0, data.shape[other], step):
        block = data[_along(data.ndim, other, slice(start, start + step))]
        spectrum = scipy.fft.rfft(np.concatenate([block, np.flip(block, axis)], axis=axis), axis=axis)
        spectrum *= gain
        block[...] = scipy.fft.irfft(spectrum, n=2 * n, axis=axis)[_along(data.ndim, axis, slice(0, n))]


def _along(ndim: int, axis: int, part: slice) -> tuple[slice, ...]:
    """An index taking ``part`` of one axis and all of the others."""
    return tuple(part if a == axis else slice(None) for a in range(ndim))


def sigmas_in_voxels(sigma_mm: float, spacing: Sequence[float]) -> tuple[float, ...]:
    """A physical sigma (mm) expressed along each voxel axis of the given spacing (mm)."""
    return tuple(float(sigma_mm) / float(s) if s > 0 else float(sigma_mm) for s in spacing)


def resample_linear(data: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Linear interpolation of the leading len(shape) axes to ``shape``, separable, float32.

    Pixel centres are aligned so that the field of view is kept (the edges of the first and last
    pixels stay where they were), like Pillow's and OpenCV's resize.
    """
    out = data if data.dtype == np.float32 else data.astype(np.float32)
    # shrinking axes first, so that no intermediate array is larger than both input and output
    for axis in sorted(range(len(shape)), key=lambda a: int(shape[a]) / data.shape[a]):
        out = _resample_axis(out, axis, int(shape[axis]))
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
    grey = np.multiply(rgb[..., 0], BT601[0], dtype=np.float32)  # channel by channel: no float copy
    for channel in (1, 2):  # of the whole colour image
        grey += np.multiply(rgb[..., channel], BT601[channel], dtype=np.float32)
    return grey


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float results back to an integer dtype (rounded, clipped to its range); floats pass through."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iub":
        return values.astype(dtype, copy=False)
    if dtype.kind == "b":
        return values >= 0.5
    if values.dtype.kind in "iub" and np.can_cast(values.dtype, dtype, "safe"):
        return values.astype(dtype)  # whole numbers that fit: nothing to round or clip
    info = np.iinfo(dtype)
    out = np.empty(values.shape, dtype)
    source, target = np.ravel(values), out.reshape(-1)
    for start in range(0, source.size, BLOCK_VALUES):  # in blocks: no full-size float temporary
        part = np.rint(source[start : start + BLOCK_VALUES])
        target[start : start + BLOCK_VALUES] = np.clip(part, info.min, info.max, out=part)
    return out


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
    finite = values.reshape(-1)
    if values.dtype.kind == "f":
        kept = np.isfinite(values)
        if not kept.all():  # a copy only when there is something to leave out
            finite = values[kept]
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
    """True where lower <= value <= upper (a missing bound is open); NaN and infinities are never
    inside. Two comparisons whatever the bounds: an open bound of a float array is its type's
    largest finite value, which NaN and the infinities fail as they fail any finite bound."""
    if values.dtype.kind == "f":
        largest = float(np.finfo(values.dtype).max)
        lower = -largest if lower is None else lower
        upper = largest if upper is None else upper
    elif lower is None and upper is None:
        return np.ones(values.shape, dtype=bool)
    mask = values >= lower if lower is not None else values <= upper
    if lower is not None and upper is not None:
        mask &= values <= upper
    return mask
