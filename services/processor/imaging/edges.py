"""Edge maps: the Sobel gradient magnitude in real units per millimetre, and Canny's edges."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import numpy as np
from scipy import ndimage

# Sobel: a central difference along one axis, [1, 2, 1] / 4 smoothing along each other spatial axis.
_DIFFERENCE = np.array([-0.5, 0.0, 0.5], np.float32)
_SMOOTH = np.array([0.25, 0.5, 0.25], np.float32)


# Values per slab of the blockwise Sobel (float32: 8 MiB a working array, four of them at once).
SLAB_VALUES = 1 << 21


def sobel_magnitude(values: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Gradient magnitude over the first ``len(spacing)`` axes (2 or 3), float32, in the values'
    units per millimetre (per pixel where the spacing is 1): the square root of the sum over those
    axes of (Sobel derivative / spacing) squared. Later axes (time, colour) are left alone; edges
    are mirrored ("reflect", as scikit-image's ``sobel``).

    Computed in slabs along a spatial axis (the one with the largest stride), each with one plane
    of its neighbours on either side (the 3-tap kernels reach no further), so that the working
    arrays are a few slabs, not volumes: the peak beyond the float32 result stays well under one
    volume (it was two more).
    """
    out = np.empty(values.shape, np.float32)
    # the spatial axis whose planes lie apart in memory: each slab is then a few contiguous runs
    axis = max(range(len(spacing)), key=lambda a: abs(values.strides[a]))
    length = values.shape[axis]
    plane = max(1, values.size // max(length, 1))
    step = max(1, SLAB_VALUES // plane)
    for start in range(0, length, step):
        stop = min(start + step, length)
        low, high = max(start - 1, 0), min(stop + 1, length)
        index: list[slice] = [slice(None)] * values.ndim
        index[axis] = slice(low, high)
        slab = _sobel_block(values[tuple(index)], spacing)
        index[axis] = slice(start - low, stop - low)
        inner = slab[tuple(index)]
        index[axis] = slice(start, stop)
        out[tuple(index)] = inner
    return out


def _sobel_block(values: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    axes = range(len(spacing))
    source = values.astype(np.float32, copy=False)
    total = np.zeros(values.shape, np.float32)
    for axis in axes:
        derivative = ndimage.correlate1d(source, _DIFFERENCE, axis=axis, mode="reflect", output=np.float32)
        for other in axes:
            if other != axis:
                ndimage.correlate1d(derivative, _SMOOTH, axis=other, mode="reflect", output=derivative)
        derivative /= np.float32(spacing[axis])
        derivative *= derivative
        total += derivative
    return np.sqrt(total, out=total)


def canny_slices(values: np.ndarray, sigma: float, low: float, high: float) -> np.ndarray:
    """Canny's edges (scikit-image's ``feature.canny``) as uint8 0/1, on each 2D plane of the first
    two axes: a 2D image once, a volume slice by slice along its third axis (and each time point).
    ``low`` and ``high`` are quantiles (0..1) of each slice's gradient magnitude."""
    from skimage.feature import canny

    out = np.zeros(values.shape, np.uint8)
    for index in product(*(range(n) for n in values.shape[2:])):
        plane = (slice(None), slice(None), *index)
        image = values[plane].astype(np.float64)
        if not np.all(np.isfinite(image)):
            image = np.nan_to_num(image, nan=float(np.nanmin(image)) if np.isfinite(image).any() else 0.0)
        out[plane] = canny(image, sigma=sigma, low_threshold=low, high_threshold=high, use_quantiles=True)
    return out
