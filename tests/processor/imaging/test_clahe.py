"""Our CLAHE (imaging/clahe.py) against scikit-image's equalize_adapthist, bit for bit in float64:
N dimensions, per-axis kernels, bin counts, clip limits at and past their edges, kernels longer
than an axis, Fortran-ordered input and slabs of a single row."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.exposure import _adapthist, equalize_adapthist

from services.processor.imaging import clahe

# the undecorated function: an array whose last axis is 3 or 4 long is not taken for colour
reference = equalize_adapthist.__wrapped__  # type: ignore[attr-defined]


def unit_image(shape: tuple[int, ...], seed: int, sigma: float = 2.0) -> np.ndarray:
    x = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    return (x - x.min()) / (x.max() - x.min())


@pytest.mark.parametrize(
    ("shape", "kernel_size", "clip_limit", "nbins"),
    [
        ((67, 93), (7, 13), 0.02, 256),
        ((64, 80), None, 0.01, 256),
        ((31, 29, 23), (5, 9, 4), 0.03, 256),
        ((31, 29, 23), 8, 0.03, 64),
        ((31, 29, 23), 8, 0.03, 1000),  # more bins than 256: uint16 bins
        ((31, 29, 23), 8, 0.03, 3),
        ((20, 17, 5), 40, 0.01, 256),  # a kernel longer than every axis: mirrored several times
        ((40, 38), 5, 1e-4, 256),  # a limit of 1: the excess handed back sweep after sweep
        ((40, 38), 5, 0.0, 256),  # 0: no clipping
        ((40, 38), 5, 2.0, 128),  # past 1: no clipping either
        ((12, 11, 9, 5), (4, 3, 5, 2), 0.05, 256),  # 4D
        ((200,), 13, 0.01, 256),  # 1D
        ((9, 10, 3), 4, 0.02, 256),
    ],
)
def test_equalize_is_scikit_images_bit_for_bit(
    shape: tuple, kernel_size: int | tuple | None, clip_limit: float, nbins: int
) -> None:
    x = unit_image(shape, len(shape) * 100 + shape[0])
    expected = reference(x, kernel_size=kernel_size, clip_limit=clip_limit, nbins=nbins)
    ours = clahe.equalize(x, kernel_size, clip_limit, nbins, dtype=np.float64)
    np.testing.assert_array_equal(ours, expected)
    single = clahe.equalize(x, kernel_size, clip_limit, nbins)  # float32: the same, rounded once
    assert single.dtype == np.float32
    np.testing.assert_array_equal(single, expected.astype(np.float32))


def test_slabs_of_one_row_and_fortran_order_give_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.asfortranarray(unit_image((23, 19, 17), 9))
    expected = reference(x, kernel_size=(6, 5, 4), clip_limit=0.02)
    monkeypatch.setattr(clahe, "SLAB_VALUES", 1)  # every pass one row of the first axis at a time
    np.testing.assert_array_equal(clahe.equalize(x, (6, 5, 4), 0.02, dtype=np.float64), expected)


def test_equalize_range_maps_any_units_and_non_finite_values_as_a_float_rescale() -> None:
    hu = (unit_image((30, 28, 12), 4) * 2400 - 1000).astype(np.float32)
    hu[0, 0, :3] = [np.nan, np.inf, -np.inf]
    finite = hu[np.isfinite(hu)].astype(np.float64)
    lo, hi = finite.min(), finite.max()
    unit_values = np.nan_to_num((hu.astype(np.float64) - lo) / (hi - lo), nan=0.0, posinf=1.0, neginf=0.0)
    expected = reference(unit_values, kernel_size=(8, 8, 6), clip_limit=0.01)
    np.testing.assert_array_equal(clahe.equalize_range(hu, (8, 8, 6), 0.01), expected.astype(np.float32))


@pytest.mark.parametrize("limit", [1, 3, 40, 200])
def test_clip_histograms_hands_back_the_excess_as_scikit_image(limit: int) -> None:
    rng = np.random.default_rng(limit)
    # peaked histograms: a few bins far over the limit, many under it
    hist = rng.poisson(rng.choice([0.5, 5.0, 80.0], size=(40, 1)), size=(40, 256)).astype(np.int64)
    hist[:, rng.integers(0, 256, 5)] += rng.integers(0, 3000, (40, 5))
    expected = np.stack([_adapthist.clip_histogram(row.copy(), clip_limit=limit) for row in hist])
    np.testing.assert_array_equal(clahe.clip_histograms(hist.copy(), limit), expected)


def test_kernel_shape_defaults_and_checks() -> None:
    assert clahe.kernel_shape((256, 100, 7), None) == (32, 12, 1)
    assert clahe.kernel_shape((40, 30), 16) == (16, 16)
    assert clahe.kernel_shape((40, 30, 9), (16, 8, 3)) == (16, 8, 3)
    with pytest.raises(ValueError, match="one value per axis"):
        clahe.kernel_shape((40, 30), (16, 8, 3))
    with pytest.raises(ValueError, match="at least 1"):
        clahe.kernel_shape((40, 30), 0)
