"""Noise reduction: the median filter, and the bilateral filter, which smooths within regions and
keeps their edges."""

from __future__ import annotations

from itertools import product

import numpy as np
from scipy import ndimage


def median(values: np.ndarray, size: int, spatial_ndim: int) -> np.ndarray:
    """The median of each ``size``-wide window (square or cube) over the first ``spatial_ndim``
    axes; later axes (time, colour) are filtered one by one. Same dtype; edges mirrored."""
    footprint = (size,) * spatial_ndim + (1,) * (values.ndim - spatial_ndim)
    return ndimage.median_filter(values, size=footprint, mode="reflect")


def noise_sigma(values: np.ndarray, colour: bool = False) -> float:
    """The noise standard deviation, estimated robustly from differences of neighbouring pixels
    along the first axis: 1.4826 x their median absolute deviation / sqrt(2) (white noise of
    sigma s gives differences of sigma s * sqrt(2); edges are too few to move a median)."""
    channels = [values[..., c] for c in range(values.shape[-1])] if colour else [values]
    estimates = []
    for channel in channels:
        d = np.diff(np.nan_to_num(channel.astype(np.float64)), axis=0).ravel()
        mad = np.median(np.abs(d - np.median(d))) if d.size else 0.0
        estimates.append(1.4826 * float(mad) / np.sqrt(2.0))
    return float(np.mean(estimates))


def bilateral(values: np.ndarray, size: int, colour: bool, sigma_color: float | None = None) -> np.ndarray:
    """scikit-image's ``denoise_bilateral`` over each 2D plane of the first two axes (a volume slice
    by slice along its third axis), float64, in the values' own units.

    The window is ``size`` pixels wide with a spatial sigma of (size - 1) / 4 (at least 0.5); the
    value sigma is ``sigma_color`` in the values' units, or twice the estimated noise, so that noise
    is averaged away while steps of a few noise levels (edges) are kept.
    """
    from skimage.restoration import denoise_bilateral

    source = values.astype(np.float64)
    if sigma_color is None:
        basis = source if colour or source.ndim <= 3 else source[..., 0]  # 4D: the first time point
        sigma_color = 2.0 * noise_sigma(basis, colour)
    sigma_color = max(float(sigma_color), 1e-6)
    sigma_spatial = max((size - 1) / 4.0, 0.5)
    out = np.empty(source.shape, np.float64)
    rest = source.shape[2:-1] if colour else source.shape[2:]
    for index in product(*(range(n) for n in rest)):
        plane = (slice(None), slice(None), *index)
        out[plane] = denoise_bilateral(
            source[plane],
            win_size=size,
            sigma_color=sigma_color,
            sigma_spatial=sigma_spatial,
            mode="reflect",
            channel_axis=-1 if colour else None,
        )
    return out
