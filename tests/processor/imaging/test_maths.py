"""Pure array maths: blur, resampling, grey conversion, windowing, geometry."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_windowing
from scipy import ndimage

from services.processor.imaging import display, filters, geometry, intensity
from services.processor.imaging.image import Display, VoiTable
from tests.processor.imaging.helpers import dicom_file, high_frequency_energy

RNG = np.random.default_rng(1234)


# -- blur ------------------------------------------------------------------------------------------


def test_blur_keeps_mean_and_lowers_variance() -> None:
    noise = RNG.normal(100.0, 20.0, size=(64, 64)).astype(np.float32)
    blurred = filters.gaussian_blur(noise, (2.0, 2.0))
    assert blurred.dtype == np.float32
    assert blurred.mean() == pytest.approx(noise.mean(), abs=0.2)
    assert blurred.var() < noise.var() / 10
    assert high_frequency_energy(blurred, 2) < high_frequency_energy(noise, 2) / 10


def test_blur_of_impulse_has_the_requested_sigma() -> None:
    impulse = np.zeros((61, 61), np.float32)
    impulse[30, 30] = 1.0
    out = filters.gaussian_blur(impulse, (3.0, 3.0))
    assert out.sum() == pytest.approx(1.0, abs=1e-4)
    column = out[:, 30] / out[:, 30].sum()
    x = np.arange(61) - 30
    assert np.sqrt(np.sum(column * x**2)) == pytest.approx(3.0, rel=0.02)


def test_volume_blur_smooths_across_slices_in_mm() -> None:
    # a single bright slice: blurring must spread it to its neighbours along z
    volume = np.zeros((16, 16, 21), np.float32)
    volume[:, :, 10] = 1000.0
    sigmas = filters.sigmas_in_voxels(4.0, (1.0, 1.0, 2.0))
    assert sigmas == (4.0, 4.0, 2.0)  # 4 mm is 2 slices of 2 mm
    out = filters.gaussian_blur(volume, sigmas)
    profile = out[8, 8, :]
    assert profile[10] < 1000.0 and profile[11] > 100.0 and profile[9] == pytest.approx(profile[11], rel=1e-5)
    # the spread along z, in slices, is sigma_mm / spacing_z
    weights = profile / profile.sum()
    z = np.arange(21) - 10
    assert np.sqrt(np.sum(weights * z**2)) == pytest.approx(2.0, rel=0.02)


def test_blur_leaves_channels_and_time_alone() -> None:
    rgb = np.zeros((32, 32, 3), np.float32)
    rgb[..., 0] = 255.0  # pure red stays pure red
    out = filters.gaussian_blur(rgb, (2.0, 2.0, 0.0))
    assert np.allclose(out[..., 0], 255.0, atol=1e-3) and np.allclose(out[..., 1:], 0.0)


@pytest.mark.parametrize(
    ("shape", "sigmas"), [((40, 30), (3.0, 20.0)), ((16, 17, 6, 2), (10.0, 30.0, 1.0, 0.0))]
)
def test_long_kernels_go_through_the_fft_with_the_same_result(shape: tuple, sigmas: tuple) -> None:
    assert 2 * int(4 * max(sigmas) + 0.5) + 1 > filters.MAX_DIRECT_TAPS
    values = RNG.normal(0.0, 1000.0, size=shape).astype(np.int16)
    expected = ndimage.gaussian_filter(values.astype(np.float32), sigma=list(sigmas), mode="reflect")
    assert np.allclose(filters.gaussian_blur(values, sigmas), expected, rtol=0, atol=1e-2)


def test_sigma_is_capped_at_twice_the_axis_and_then_gives_the_mean() -> None:
    assert filters.effective_sigmas((1e6, 3.0, 0.0), (8, 50, 3)) == (16.0, 3.0, 0.0)
    volume = RNG.normal(100.0, 20.0, size=(64, 48, 5)).astype(np.float32)
    blurred = filters.gaussian_blur(volume, (2e4, 2e4, 0.0))  # sigma 20,000 voxels: no slower
    assert np.allclose(blurred, volume.mean(axis=(0, 1), keepdims=True), atol=1e-3)


# -- resampling ------------------------------------------------------------------------------------


def test_resample_linear_shapes_and_linear_ramp() -> None:
    ramp = np.tile(np.arange(8, dtype=np.float32), (4, 1))  # value = column index
    out = filters.resample_linear(ramp, (4, 16))
    assert out.shape == (4, 16)
    # pixel centres: new column j sits at old column (j + 0.5) / 2 - 0.5, clamped at the edges
    expected = np.clip((np.arange(16) + 0.5) / 2 - 0.5, 0, 7)
    assert np.allclose(out[0], expected, atol=1e-6)
    down = filters.resample_linear(ramp, (2, 4))
    assert np.allclose(down[0], [0.5, 2.5, 4.5, 6.5])


def test_resample_shrinks_before_it_grows() -> None:
    # (4, 256, 256) -> (256, 4, 4): growing axis 0 first would pass through 256**3 floats (64 MiB)
    tracemalloc.start()
    out = filters.resample_linear(np.ones((4, 256, 256), np.float32), (256, 4, 4))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == (256, 4, 4) and np.allclose(out, 1.0)
    assert peak < 4 * 1024**2


def test_resample_keeps_trailing_axes() -> None:
    data = RNG.random((10, 12, 6, 2)).astype(np.float32)
    out = filters.resample_linear(data, (5, 6, 3))
    assert out.shape == (5, 6, 3, 2)


def test_fit_inside_keeps_aspect() -> None:
    assert filters.fit_inside(1000, 500, 512, 512) == (512, 256)
    assert filters.fit_inside(300, 600, 512, 512) == (256, 512)
    assert filters.shape_for_spacing((100, 100, 20), (1.0, 1.0, 5.0), (2.0, 2.0, 2.5)) == (50, 50, 40)


def test_resampled_affine_keeps_world_extent_and_centre() -> None:
    affine = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 3.0, -72], [0, 0, 0, 1]])
    old, new = (40, 50, 20), (80, 25, 60)
    new_affine = geometry.resampled_affine(affine, old, new)
    assert np.allclose(geometry.voxel_sizes(new_affine), (1.0, 4.0, 1.0))

    def corners(aff: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        lo = aff @ np.array([-0.5, -0.5, -0.5, 1.0])
        hi = aff @ np.array([shape[0] - 0.5, shape[1] - 0.5, shape[2] - 0.5, 1.0])
        return np.stack([lo, hi])

    assert np.allclose(corners(affine, old), corners(new_affine, new))
    centre = lambda aff, shape: aff @ np.array([(n - 1) / 2 for n in shape] + [1.0])  # noqa: E731
    assert np.allclose(centre(affine, old), centre(new_affine, new))


# -- grey ------------------------------------------------------------------------------------------


def test_luminance_uses_bt601_weights() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 200, 200]]], np.uint8)
    grey = filters.luminance(rgb)
    assert np.allclose(grey[0], [0.299 * 255, 0.587 * 255, 0.114 * 255, 200.0], atol=1e-3)
    assert np.array_equal(filters.cast_like(grey, np.uint8)[0], [76, 150, 29, 200])


def test_cast_like_rounds_and_clips() -> None:
    values = np.array([-3.0, 0.4, 0.6, 254.5, 300.0], np.float32)
    assert filters.cast_like(values, np.uint8).tolist() == [0, 0, 1, 254, 255]
    assert filters.cast_like(np.array([70000.0]), np.uint16).tolist() == [65535]
    assert filters.integral_dtype(np.array([-1024.0, 3000.0])) == np.int16
    assert filters.integral_dtype(np.array([0.5])) is None


# -- windowing -------------------------------------------------------------------------------------


def test_window_linear_matches_dicom_formula() -> None:
    values = np.array([-1000.0, -160.0, 40.0, 240.0, 1000.0])
    out = display.window_linear(values, center=40, width=400)
    assert out[0] == 0 and out[-1] == 255
    assert out[2] == pytest.approx(((40 - 39.5) / 399 + 0.5) * 255)
    assert np.all(np.diff(out) >= 0)


def test_window_matches_pydicom_apply_windowing() -> None:
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    arr = ds.pixel_array
    theirs = apply_windowing(arr.astype(np.float64), ds)
    y_min, y_max = -(2**15), 2**15 - 1  # pydicom's output range for signed 16-bit data
    ours = display.window_linear(arr, float(ds.WindowCenter), float(ds.WindowWidth), y_min, y_max)
    assert np.allclose(ours, theirs, rtol=1e-5, atol=0.5)


def test_monochrome1_is_inverted_for_display() -> None:
    values = np.array([[0.0, 50.0, 100.0]])
    normal = display.to_display_uint8(values, Display(window=(50, 101)))
    inverted = display.to_display_uint8(values, Display(window=(50, 101), invert=True))
    assert normal[0, 0] < normal[0, 2]
    assert np.array_equal(inverted.astype(int), 255 - normal.astype(int))


def test_display_falls_back_to_min_max_and_uses_voi_tables() -> None:
    values = np.array([[10.0, 20.0, 30.0]])
    assert display.to_display_uint8(values, Display()).tolist() == [[0, 128, 255]]
    table = VoiTable(first_mapped=10, table=np.linspace(0, 4095, 21, dtype=np.float32), bits=12)
    out = display.to_display_uint8(values, Display(voi_table=table))
    assert out.tolist() == [[0, 128, 255]]


# -- geometry --------------------------------------------------------------------------------------


def test_dicom_affine_maps_lps_to_ras() -> None:
    affine = geometry.dicom_affine((1, 0, 0, 0, 1, 0), (-100.0, -50.0, 20.0), (0.5, 0.8), 3.0)
    # voxel (column 1, row 2, slice 1): LPS (-100 + 0.8, -50 + 2 * 0.5, 23) -> RAS flips x and y
    assert np.allclose(affine @ [1, 2, 1, 1], [99.2, 49.0, 23.0, 1.0])
    order, distances = geometry.slice_order(
        np.array([[0, 0, 6.0], [0, 0, 0.0], [0, 0, 3.0]]), (1, 0, 0, 0, 1, 0)
    )
    assert order.tolist() == [1, 2, 0] and distances.tolist() == [0.0, 3.0, 6.0]


# -- threshold -------------------------------------------------------------------------------------


def test_otsu_splits_two_populations_between_their_modes() -> None:
    values = np.concatenate([RNG.normal(100, 10, 5000), RNG.normal(400, 30, 3000)])
    labels = np.arange(values.size) >= 5000
    t = filters.otsu_threshold(values)
    assert 100 < t < 400
    assert np.mean((values >= t) == labels) > 0.999
    assert filters.otsu_threshold(np.full((4, 4), 7.0)) == 7.0
    with_nan = np.concatenate([values, [np.nan, np.inf]])
    assert abs(filters.otsu_threshold(with_nan) - t) < 1e-6
    with pytest.raises(ValueError):
        filters.otsu_threshold(np.array([np.nan]))


def test_band_mask_is_inclusive_and_never_takes_nan() -> None:
    values = np.array([np.nan, -1.0, 0.0, 5.0, 10.0, 11.0])
    assert filters.band_mask(values, 0.0, 10.0).tolist() == [False, False, True, True, True, False]
    assert filters.band_mask(values, None, 0.0).tolist() == [False, True, True, False, False, False]
    assert filters.band_mask(np.arange(4), 2, None).tolist() == [False, False, True, True]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("lower", "upper"), [(None, None), (0.0, None), (None, 0.0), (-1.0, 5.0)])
def test_band_mask_leaves_out_nan_and_infinities_whatever_the_bounds(dtype, lower, upper) -> None:
    values = np.array([np.nan, -np.inf, np.inf, -1.0, 0.0, 5.0, np.finfo(dtype).max], dtype)
    finite = np.isfinite(values)
    expected = finite.copy()
    if lower is not None:
        expected &= np.where(finite, values, 0) >= lower
    if upper is not None:
        expected &= np.where(finite, values, 0) <= upper
    assert filters.band_mask(values, lower, upper).tolist() == expected.tolist()


@pytest.mark.parametrize("method", ["minmax", "zscore", "percentile"])
def test_normalize_a_large_volume_without_float64_copies(method: str) -> None:
    # 8M voxels, two blocks: float64 maths block by block, so the peak stays near the float32 output
    values = RNG.normal(100.0, 30.0, (256, 256, 128)).astype(np.float32)
    tracemalloc.start()
    intensity.normalize(values, method, 2.0, 98.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    values[0, 0, 0] = np.nan  # NaN stays NaN and is left out of the statistics
    out, _ = intensity.normalize(values, method, 2.0, 98.0)
    x = values.astype(np.float64)
    finite = x[np.isfinite(x)]
    if method == "minmax":
        expected = (x - finite.min()) / (finite.max() - finite.min())
    elif method == "zscore":
        expected = (x - finite.mean()) / finite.std()
    else:
        lo, hi = np.percentile(finite, [2.0, 98.0])
        expected = (np.clip(x, lo, hi) - lo) / (hi - lo)
    assert out.dtype == np.float32 and np.isnan(out[0, 0, 0])
    np.testing.assert_allclose(out, expected.astype(np.float32), rtol=1e-6, atol=1e-7)
    assert peak < 2.5 * values.nbytes  # was 4x: a copy of the finite values and a float64 copy


@pytest.mark.parametrize("invert", [False, True])
def test_window_uint8_of_a_large_volume_is_the_standards_formula_in_little_memory(invert: bool) -> None:
    # 8M voxels, two blocks of float64 maths in one reused buffer: no full-size float64 temporaries
    values = RNG.normal(40.0, 300.0, (256, 256, 128)).astype(np.float32)
    values[0, 0, :3] = [np.nan, -np.inf, np.inf]
    tracemalloc.start()
    out = intensity.window_uint8(values, 40.0, 400.0, invert=invert)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    x = values.astype(np.float64)  # PS3.3 C.11.2.1.2.1, output range 0..255
    linear = ((x - 39.5) / 399 + 0.5) * 255
    expected = np.where(x <= 39.5 - 399 / 2, 0.0, np.where(x > 39.5 + 399 / 2, 255.0, linear))
    if invert:
        expected = 255.0 - expected
    expected[0, 0, 0] = 0.0  # NaN: black, inverted or not
    np.testing.assert_array_equal(out, np.rint(expected).astype(np.uint8))
    assert peak < 1.5 * values.nbytes
