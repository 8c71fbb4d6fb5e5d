"""The operations (docs/imaging.md) against independent computations: the DICOM window formula
written here from PS3.3 C.11.2.1.2.1, numpy statistics, scipy.ndimage, scikit-image, nibabel's
as_closest_canonical, pydicom reading our DICOM back; on arrays and on pydicom's and nibabel's
sample files. Cine frames must come out as each frame processed alone."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import scipy.stats
from PIL import Image as PILImage
from pydicom.pixels import apply_modality_lut
from scipy import ndimage
from skimage import exposure, feature, filters, restoration

from services.processor import imaging, operations
from services.processor.imaging.image import Image
from services.processor.operations import InputNotAccepted, ParamsError
from tests.processor.imaging.helpers import NIBABEL_DATA, ct_slice, dicom_file

CT = dicom_file("CT_small.dcm")
CINE = dicom_file("SC_rgb_rle_2frame.dcm")  # two RGB frames in time, no positions
ANATOMICAL = NIBABEL_DATA / "anatomical.nii"
FOUR_D = NIBABEL_DATA / "example4d.nii.gz"


def apply(name: str, image: Image, **params: Any) -> Image:
    """The operation on a decoded image, params validated as a task's are."""
    return operations.get(name).apply(image, operations.validate_params(name, params))  # type: ignore[misc]


def run(name: str, path: Path, out: Path, **params: Any) -> dict:
    return operations.run(
        name, params, str(path), str(out), "scan", job_id="8d3c1a52-0f6e-4bd1-9d7a-0c2f5e1b7a10"
    )


def outputs_by_name(result: dict) -> dict[str, dict]:
    return {o["filename"]: o for o in result["outputs"]}


def png(path: str) -> np.ndarray:
    with PILImage.open(path) as pil:
        return np.asarray(pil)


def hounsfield(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return apply_modality_lut(ds.pixel_array, ds).astype(np.float64)


def nifti_data(path: Path | str) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


# -- window ----------------------------------------------------------------------------------------


def standard_linear_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out as the standard states it, output range 0..255."""
    y_min, y_max = 0.0, 255.0
    x = x.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # w = 1: only the two conditions apply
        y = ((x - (c - 0.5)) / (w - 1) + 0.5) * (y_max - y_min) + y_min
    y = np.where(x <= c - 0.5 - (w - 1) / 2, y_min, y)
    y = np.where(x > c - 0.5 + (w - 1) / 2, y_max, y)
    return np.rint(y).astype(np.uint8)


def test_window_presets_are_the_contracts() -> None:
    schema = operations.get("window").params_schema
    assert schema["properties"]["preset"]["enum"][1:] == [
        "brain",
        "subdural",
        "stroke",
        "lung",
        "mediastinum",
        "abdomen",
        "liver",
        "bone",
        "soft_tissue",
    ]
    offered = {(p["center"], p["width"]) for p in schema["examples"]}
    assert offered == {
        (40, 80),
        (75, 215),
        (40, 40),
        (-600, 1500),
        (50, 350),
        (50, 400),
        (30, 150),
        (400, 1800),
        (40, 400),
    }


@pytest.mark.parametrize(
    ("params", "center", "width"),
    [
        ({"center": 40, "width": 400}, 40, 400),
        ({"preset": "brain"}, 40, 80),
        ({"preset": "bone"}, 400, 1800),
        ({"center": 1000.5, "width": 1}, 1000.5, 1),  # width 1: a threshold at the center
    ],
)
def test_window_of_a_ct_is_the_standards_linear_function_in_hu(
    params: dict, center: float, width: float, tmp_path: Path
) -> None:
    result = run("window", CT, tmp_path, **params)
    written = png(outputs_by_name(result)["scan_processed.png"]["path"])
    np.testing.assert_array_equal(written, standard_linear_window(hounsfield(CT), center, width))
    assert result["metadata"]["window_center"] == center and result["metadata"]["window_width"] == width


def test_window_without_params_uses_the_inputs_own_window(tmp_path: Path) -> None:
    pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 2000
    path = tmp_path / "w.dcm"
    path.write_bytes(ct_slice(pixels, series_uid="1.2", position=None, window=(-200, 500)))
    result = run("window", path, tmp_path)
    expected = standard_linear_window(pixels.astype(np.float64) - 1024, -200, 500)
    np.testing.assert_array_equal(png(result["outputs"][0]["path"]), expected)
    assert result["metadata"]["window_from"] == "input"


def test_window_of_a_volume_is_an_8bit_nifti_of_the_same_grid(tmp_path: Path) -> None:
    result = run("window", ANATOMICAL, tmp_path, center=50, width=100)
    out = nib.load(result["outputs"][0]["path"])
    source = nib.load(ANATOMICAL)
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, source.affine, atol=1e-6)
    np.testing.assert_array_equal(
        np.asanyarray(out.dataobj), standard_linear_window(source.get_fdata(), 50, 100)
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"center": 40}, "Give both center and width"),
        ({"preset": "lung", "center": 1, "width": 2}, "either a preset or center and width"),
        ({"center": 40, "width": 0.5}, "width must be at least 1"),
        ({"preset": "heart"}, "preset must be one of"),
    ],
)
def test_window_params_are_checked(params: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        operations.validate_params("window", params)


# -- normalize -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["minmax", "zscore", "percentile"])
def test_normalize_volume_against_numpy_and_scipy(method: str, tmp_path: Path) -> None:
    result = run("normalize", ANATOMICAL, tmp_path, method=method, low=2, high=98)
    out = nib.load(result["outputs"][0]["path"])
    assert out.get_data_dtype() == np.float32
    x = nib.load(ANATOMICAL).get_fdata()
    if method == "minmax":
        expected = (x - x.min()) / (x.max() - x.min())
    elif method == "zscore":
        expected = scipy.stats.zscore(x, axis=None)
    else:
        lo, hi = np.percentile(x, [2, 98])
        expected = (np.clip(x, lo, hi) - lo) / (hi - lo)
    np.testing.assert_allclose(np.asanyarray(out.dataobj), expected, rtol=1e-5, atol=1e-6)


def test_normalize_percentile_needs_low_below_high() -> None:
    with pytest.raises(ParamsError, match=r"low \(99\) must be below high \(1\)"):
        operations.validate_params("normalize", {"method": "percentile", "low": 99, "high": 1})


def test_normalize_of_a_2d_dicom_can_go_back_as_dicom(tmp_path: Path) -> None:
    result = run("normalize", CT, tmp_path, method="zscore", output_format="dicom")
    primary = result["outputs"][0]
    assert primary["filename"] == "scan_processed.dcm" and primary["media_type"] == "application/dicom"
    back = pydicom.dcmread(primary["path"])
    hu = hounsfield(CT)
    expected = (hu - hu.mean()) / hu.std()
    real = apply_modality_lut(back.pixel_array, back)
    assert np.abs(real - expected).max() <= float(back.RescaleSlope) / 2 + 1e-6
    assert back.DerivationDescription.startswith('normalize {"high":99.0,"low":1.0,"method":"zscore"}')


# -- denoise ---------------------------------------------------------------------------------------


def test_median_of_a_volume_is_scipys_3d_median(tmp_path: Path) -> None:
    result = run("denoise", ANATOMICAL, tmp_path, method="median", size=3)
    source = np.asanyarray(nib.load(ANATOMICAL).dataobj)
    np.testing.assert_array_equal(
        nifti_data(result["outputs"][0]["path"]), ndimage.median_filter(source, size=3, mode="reflect")
    )


def test_median_of_a_4d_volume_never_mixes_time_points() -> None:
    image = imaging.load(FOUR_D)
    out = apply("denoise", image, method="median", size=3)
    for t in range(image.data.shape[3]):
        np.testing.assert_array_equal(out.data[..., t], ndimage.median_filter(image.data[..., t], size=3))


def noise_estimate(x: np.ndarray) -> float:
    """1.4826 MAD of neighbour differences / sqrt 2: the robust white-noise sigma."""
    d = np.diff(x, axis=0).ravel()
    return 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2)


def test_bilateral_of_a_ct_is_scikit_images_and_keeps_edges() -> None:
    image = imaging.load(CT)
    out = apply("denoise", image, method="bilateral", size=5)
    hu = hounsfield(CT)
    expected = restoration.denoise_bilateral(
        hu, win_size=5, sigma_color=2 * noise_estimate(hu), sigma_spatial=1.0, mode="reflect"
    )
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-3)

    rng = np.random.default_rng(3)
    step = np.where(np.arange(64)[None, :] < 32, 0.0, 1000.0) * np.ones((64, 1))
    noisy = Image(data=(step + rng.normal(0, 20, step.shape)).astype(np.float32), kind="2d")
    smooth = apply("denoise", noisy, method="bilateral", size=7).data
    assert np.std(smooth[:, 5:25] - step[:, 5:25]) < 0.6 * 20  # noise reduced in flat regions
    assert smooth[:, 34].mean() - smooth[:, 29].mean() > 950  # the 1000 HU step stays a step
    blurred = ndimage.uniform_filter(noisy.data, 7)
    assert blurred[:, 34].mean() - blurred[:, 29].mean() < 950  # a plain average smears it


def test_denoise_size_must_be_odd() -> None:
    with pytest.raises(ParamsError, match="size must be odd"):
        operations.validate_params("denoise", {"size": 4})


# -- edges -----------------------------------------------------------------------------------------


def skimage_gradient(x: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """scikit-image's per-axis Sobel is twice the derivative per voxel: over 2 x spacing per mm."""
    return np.sqrt(sum((filters.sobel(x, axis=a) / (2 * s)) ** 2 for a, s in enumerate(spacing)))


def test_sobel_of_a_ct_slice_is_the_gradient_in_hu_per_mm() -> None:
    image = imaging.load(CT)
    out = apply("edges", image, method="sobel")
    spacing = tuple(float(v) for v in pydicom.dcmread(CT).PixelSpacing)
    np.testing.assert_allclose(out.data, skimage_gradient(hounsfield(CT), spacing), rtol=1e-4, atol=1e-3)
    assert out.metadata["units"] == "HU per mm"


def test_sobel_of_a_volume_is_3d_with_each_axis_spacing() -> None:
    image = imaging.load(ANATOMICAL)
    zooms = nib.load(ANATOMICAL).header.get_zooms()[:3]
    out = apply("edges", image, method="sobel")
    expected = skimage_gradient(nib.load(ANATOMICAL).get_fdata(), tuple(float(z) for z in zooms))
    np.testing.assert_allclose(out.data, expected, rtol=1e-4, atol=1e-3)


def test_canny_is_scikit_images_slice_by_slice(tmp_path: Path) -> None:
    result = run("edges", ANATOMICAL, tmp_path, method="canny", sigma=1.5, low=0.6, high=0.85)
    edges = nifti_data(result["outputs"][0]["path"])
    assert edges.dtype == np.uint8 and set(np.unique(edges)) <= {0, 1}
    x = nib.load(ANATOMICAL).get_fdata()
    for k in range(x.shape[2]):
        expected = feature.canny(
            x[:, :, k], sigma=1.5, low_threshold=0.6, high_threshold=0.85, use_quantiles=True
        )
        np.testing.assert_array_equal(edges[:, :, k], expected.astype(np.uint8))
    assert result["metadata"]["content"] == "mask"


def test_canny_of_a_2d_image_is_black_and_white(tmp_path: Path) -> None:
    result = run("edges", CT, tmp_path, method="canny", sigma=2)
    written = png(result["outputs"][0]["path"])
    expected = feature.canny(
        hounsfield(CT), sigma=2, low_threshold=0.7, high_threshold=0.9, use_quantiles=True
    )
    np.testing.assert_array_equal(written, expected.astype(np.uint8) * 255)


# -- equalize --------------------------------------------------------------------------------------


def unit(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min())


def test_clahe_of_a_ct_is_scikit_images() -> None:
    out = apply("equalize", imaging.load(CT), clip_limit=0.02, kernel_size=32)
    expected = exposure.equalize_adapthist(unit(hounsfield(CT)), kernel_size=32, clip_limit=0.02)
    np.testing.assert_array_equal(out.data, np.rint(expected * 255).astype(np.uint8))


def test_clahe_of_a_volume_is_3d() -> None:
    out = apply("equalize", imaging.load(ANATOMICAL), clip_limit=0.01, kernel_size=None)
    expected = exposure.equalize_adapthist(unit(nib.load(ANATOMICAL).get_fdata()), clip_limit=0.01)
    np.testing.assert_allclose(out.data, expected, atol=1e-6)
    assert out.data.dtype == np.float32


def _smooth(shape: tuple[int, ...], seed: int, scale: float = 800.0) -> np.ndarray:
    """Smooth structure plus noise in real units (so that the histograms are not flat)."""
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.random(shape), 2.0) * scale + rng.normal(0, 5, shape) - 300.0)


def reference_clahe(values: np.ndarray, kernel: tuple[int, ...] | None, clip_limit: float) -> np.ndarray:
    """scikit-image on the min..max rescaled values (the undecorated function: a volume whose last
    axis is 3 or 4 long is not colour; a constant image rescales to zeros)."""
    x = values.astype(np.float64)
    span = x.max() - x.min()
    unit_values = (x - x.min()) / span if span > 0 else np.zeros(x.shape)
    return exposure.equalize_adapthist.__wrapped__(unit_values, kernel_size=kernel, clip_limit=clip_limit)


# Sizes not divisible by the kernel, a kernel larger than an axis (capped there: an anisotropic
# kernel), the default kernel (1/8 of each axis), the schema's clip limits at their edges.
CLAHE_VOLUMES = [
    ((37, 29, 23), 8, 0.01),
    ((40, 33, 9), 16, 0.02),  # kernel (16, 16, 9): the last axis is shorter than 16
    ((41, 35, 27), None, 0.01),  # kernel (5, 4, 3)
    ((30, 26, 19), 6, 1e-6),  # a limit of one count per bin: almost everything handed back
    ((30, 26, 19), 6, 1.0),  # no clipping: plain adaptive equalisation
    ((25, 21, 3), 7, 0.05),
]


@pytest.mark.parametrize(("shape", "kernel_size", "clip_limit"), CLAHE_VOLUMES)
def test_clahe_of_volumes_is_scikit_images(shape: tuple, kernel_size: int | None, clip_limit: float) -> None:
    values = _smooth(shape, sum(shape)).astype(np.float32)
    image = Image(data=values, kind="volume", affine=np.diag([0.8, 0.8, 2.0, 1.0]))
    out = apply("equalize", image, clip_limit=clip_limit, kernel_size=kernel_size)
    kernel = None if kernel_size is None else tuple(min(kernel_size, n) for n in shape)
    expected = reference_clahe(values, kernel, clip_limit)
    assert out.data.dtype == np.float32
    # the same 2**14 levels, the same stretch: scikit-image's float64 result rounded to float32
    np.testing.assert_array_equal(out.data, expected.astype(np.float32))


@pytest.mark.parametrize(
    ("shape", "kernel_size", "clip_limit"),
    [((67, 93), 10, 0.02), ((64, 48), None, 0.01), ((31, 90), 40, 1e-6), ((50, 45), 3, 1.0)],
)
def test_clahe_of_2d_arrays_is_scikit_images(
    shape: tuple, kernel_size: int | None, clip_limit: float
) -> None:
    values = _smooth(shape, shape[0]).astype(np.int16)
    out = apply("equalize", Image(data=values, kind="2d"), clip_limit=clip_limit, kernel_size=kernel_size)
    kernel = None if kernel_size is None else tuple(min(kernel_size, n) for n in shape)
    expected = reference_clahe(values, kernel, clip_limit)
    np.testing.assert_array_equal(out.data, np.rint(expected * 255).astype(np.uint8))


@pytest.mark.parametrize("kind", ["2d", "volume"])
def test_clahe_of_a_constant_image_is_scikit_images(kind: str) -> None:
    shape = (20, 30) if kind == "2d" else (12, 10, 9)
    values = np.full(shape, 7.0, np.float32)
    out = apply("equalize", Image(data=values, kind=kind), clip_limit=0.01, kernel_size=None)  # type: ignore[arg-type]
    expected = reference_clahe(values, None, 0.01)
    assert np.unique(expected).size == 1  # one level, kept within 0..1 by scikit-image's stretch
    if kind == "2d":
        np.testing.assert_array_equal(out.data, np.rint(expected * 255).astype(np.uint8))
    else:
        np.testing.assert_array_equal(out.data, expected.astype(np.float32))


def test_clahe_of_a_float32_volume_stays_under_three_volumes() -> None:
    # scikit-image's equalize_adapthist peaks at ~13 volumes here (float64 padded copies, its
    # histograms per region); ours: the float32 result, uint8 bins and a few slabs.
    data = _smooth((96, 96, 96), 5).astype(np.float32)
    image = Image(data=data, kind="volume", affine=np.diag([0.9, 0.9, 1.2, 1.0]))
    tracemalloc.start()
    try:
        out = apply("equalize", image, clip_limit=0.01, kernel_size=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * data.nbytes, peak / data.nbytes
    np.testing.assert_array_equal(out.data, reference_clahe(data, None, 0.01).astype(np.float32))


def test_clahe_of_colour_equalises_the_value_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    rgb = (ndimage.gaussian_filter(rng.random((80, 96, 3)), (4, 4, 0)) * 120 + 40).astype(np.uint8)
    path = tmp_path / "c.png"
    PILImage.fromarray(rgb).save(path)
    result = run("equalize", path, tmp_path, clip_limit=0.03)
    expected = np.rint(exposure.equalize_adapthist(rgb, clip_limit=0.03) * 255).astype(np.uint8)
    np.testing.assert_array_equal(png(result["outputs"][0]["path"]), expected)


# -- mip ---------------------------------------------------------------------------------------------


def marked_volume(tmp_path: Path) -> tuple[Path, Path]:
    """One 1 mm volume twice: stored LPI with the voxel axes permuted (j along x), and in RAS+.
    A marker sits at the patient's right, anterior, superior corner region."""
    rng = np.random.default_rng(9)
    ras = rng.integers(0, 100, (20, 24, 16)).astype(np.int16)  # x: L->R, y: P->A, z: I->S
    ras[16:19, 19:22, 11:14] = 1000  # right, anterior, superior
    canonical = nib.Nifti1Image(ras, np.diag([1.0, 1.0, 1.0, 1.0]))
    # stored: voxel axis 0 runs posterior (-y), axis 1 left (-x), axis 2 inferior (-z)
    stored = np.flip(np.transpose(ras, (1, 0, 2)), axis=(0, 1, 2)).copy()
    affine = np.array([[0, -1, 0, 19], [-1, 0, 0, 23], [0, 0, -1, 15], [0, 0, 0, 1]], float)
    odd = nib.Nifti1Image(stored, affine)
    paths = tmp_path / "odd.nii.gz", tmp_path / "ras.nii.gz"
    nib.save(odd, paths[0])
    nib.save(canonical, paths[1])
    return paths


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("mode", ["max", "min", "mean"])
def test_mip_projects_along_the_patients_axis_whatever_the_voxel_order(
    axis: str, mode: str, tmp_path: Path
) -> None:
    odd, ras = marked_volume(tmp_path)
    canon = np.asanyarray(nib.as_closest_canonical(nib.load(odd)).dataobj).astype(np.float64)
    normal = {"sagittal": 0, "coronal": 1, "axial": 2}[axis]
    projected = {"max": np.max, "min": np.min, "mean": np.mean}[mode](canon, axis=normal)
    expected = projected[::-1, ::-1].T  # rows: the second axis reversed; columns: the first reversed
    for path in (odd, ras):
        out = apply("mip", imaging.load(path), axis=axis, mode=mode)
        np.testing.assert_allclose(out.data, expected, rtol=1e-6)


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_mip_of_a_4d_volume_in_any_voxel_order_is_each_time_points_projection(
    axis: str, tmp_path: Path
) -> None:
    odd, _ = marked_volume(tmp_path)
    stored = nib.load(odd)
    series = np.stack([np.asanyarray(stored.dataobj), np.asanyarray(stored.dataobj)[::-1] * 2], axis=3)
    image = Image(data=series, kind="volume", affine=stored.affine)
    out = apply("mip", image, axis=axis, mode="max")
    normal = {"sagittal": 0, "coronal": 1, "axial": 2}[axis]
    for t in range(2):
        one = nib.Nifti1Image(series[..., t], stored.affine)
        canon = np.asanyarray(nib.as_closest_canonical(one).dataobj)
        np.testing.assert_array_equal(out.data[..., t], canon.max(axis=normal)[::-1, ::-1].T)


def test_mip_png_is_in_radiological_display_convention(tmp_path: Path) -> None:
    odd, _ = marked_volume(tmp_path)
    for axis, corner in (("axial", "top-left"), ("coronal", "top-left"), ("sagittal", "top-left")):
        out_dir = tmp_path / axis
        out_dir.mkdir()
        shown = png(run("mip", odd, out_dir, axis=axis)["outputs"][0]["path"])
        rows, cols = np.nonzero(shown == shown.max())
        # axial: anterior up, patient's right on the left; coronal: superior up, right on the left;
        # sagittal: superior up, anterior on the left. The marker is right, anterior, superior.
        assert rows.mean() < shown.shape[0] / 2 and cols.mean() < shown.shape[1] / 2, (axis, corner)


def test_mip_of_thick_slices_has_square_pixels() -> None:
    data = np.zeros((40, 30, 10), np.float32)
    image = Image(data=data, kind="volume", affine=np.diag([0.5, 0.5, 4.0, 1.0]))
    out = apply("mip", image, axis="coronal")
    assert out.data.shape == (80, 40)  # 10 slices of 4 mm over 40 columns of 0.5 mm: 0.5 mm pixels
    assert out.spacing == (0.5, 0.5)


def test_mip_refuses_2d_images(tmp_path: Path) -> None:
    with pytest.raises(InputNotAccepted, match="mip does not accept a 2D image"):
        run("mip", CT, tmp_path)


# -- reorient --------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["odd", "anatomical"])
def test_reorient_is_nibabels_as_closest_canonical(which: str, tmp_path: Path) -> None:
    path = marked_volume(tmp_path)[0] if which == "odd" else ANATOMICAL
    result = run("reorient", path, tmp_path)
    out = nib.load(result["outputs"][0]["path"])
    reference = nib.as_closest_canonical(nib.load(path))
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), np.asanyarray(reference.dataobj))
    np.testing.assert_allclose(out.affine, reference.affine, atol=1e-5)
    assert nib.aff2axcodes(out.affine) == ("R", "A", "S")
    assert result["metadata"]["orientation_after"] == "RAS"


def test_reorient_of_a_dicom_series_can_go_back_as_a_dicom_series(tmp_path: Path) -> None:
    zip_path = tmp_path / "series.zip"
    rng = np.random.default_rng(2)
    with zipfile.ZipFile(zip_path, "w") as zf:
        for k in range(5):
            pixels = rng.integers(900, 1200, (12, 10)).astype(np.uint16)
            zf.writestr(
                f"{k}.dcm",
                ct_slice(pixels, series_uid="1.2.3.9", position=(-5.0, 7.0, 2.5 * k), instance=k + 1),
            )
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run("reorient", zip_path, out_dir, output_format="dicom")
    primary = result["outputs"][0]
    assert primary["filename"] == "scan_processed.zip" and primary["media_type"] == "application/zip"
    back = imaging.load(primary["path"])
    source = imaging.load(zip_path)
    canon = nib.as_closest_canonical(nib.Nifti1Image(source.data, source.affine))
    # the written series holds the canonical voxels at the canonical geometry (read by our reader,
    # which sorts slices along the normal again)
    np.testing.assert_allclose(back.affine, canon.affine, atol=1e-4)
    np.testing.assert_array_equal(back.data, np.asanyarray(canon.dataobj))
    with zipfile.ZipFile(primary["path"]) as zf:
        series = {pydicom.dcmread(io.BytesIO(zf.read(n))).SeriesInstanceUID for n in zf.namelist()}
    assert len(series) == 1 and series != {"1.2.3.9"}


# -- convert ---------------------------------------------------------------------------------------


def test_convert_to_nifti_keeps_float64_real_units_exactly(tmp_path: Path) -> None:
    path = tmp_path / "slope.dcm"
    pixels = np.arange(30 * 20, dtype=np.uint16).reshape(30, 20)
    path.write_bytes(ct_slice(pixels, series_uid="1.3", position=(0, 0, 0), slope=0.37, intercept=-1000.25))
    result = run("convert", path, tmp_path, format="nifti")
    data = nifti_data(result["outputs"][0]["path"])
    assert data.dtype == np.float64 and data.shape == (20, 30, 1)
    np.testing.assert_array_equal(data[:, :, 0].T, hounsfield(path))  # pydicom's float64, bit for bit


def test_convert_series_to_nifti_keeps_hu_and_int16(tmp_path: Path) -> None:
    zip_path = tmp_path / "series.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for k in range(4):
            zf.writestr(
                f"{k}.dcm",
                ct_slice(np.full((8, 6), 1000 + k, np.uint16), series_uid="1.4", position=(0, 0, 3.0 * k)),
            )
    result = run("convert", zip_path, tmp_path, format="nifti")
    data = nifti_data(result["outputs"][0]["path"])
    assert data.dtype == np.int16
    np.testing.assert_array_equal(data[0, 0, :], [-24, -23, -22, -21])


def test_convert_volume_to_dicom_series_round_trips(tmp_path: Path) -> None:
    result = run("convert", ANATOMICAL, tmp_path, format="dicom")
    names = [o["filename"] for o in result["outputs"]]
    assert names[0] == "scan_processed.zip"
    source = nib.load(ANATOMICAL)
    with zipfile.ZipFile(result["outputs"][0]["path"]) as zf:
        slices = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in sorted(zf.namelist())]
    assert len(slices) == source.shape[2] and len({s.SeriesInstanceUID for s in slices}) == 1
    values = np.stack([apply_modality_lut(s.pixel_array, s).T for s in slices], axis=-1)
    step = float(slices[0].RescaleSlope)
    assert np.abs(values - source.get_fdata()).max() <= step / 2 + 1e-6
    back = imaging.load(result["outputs"][0]["path"])  # sorted along the slice normal again
    read, written = (nib.as_closest_canonical(i) for i in (nib.Nifti1Image(back.data, back.affine), source))
    np.testing.assert_allclose(read.affine, written.affine, atol=1e-4)  # the same voxels in space
    assert np.abs(read.get_fdata() - written.get_fdata()).max() <= step / 2 + 1e-6


def test_convert_volume_to_png_gives_its_three_planes(tmp_path: Path) -> None:
    result = run("convert", ANATOMICAL, tmp_path, format="png")
    assert [(o["filename"], o["role"]) for o in result["outputs"]] == [
        ("scan_processed.png", "primary"),
        ("scan_preview_coronal.png", "preview"),
        ("scan_preview_sagittal.png", "preview"),
    ]


def test_convert_png_to_dicom_is_a_secondary_capture(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    rgb = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    PILImage.fromarray(rgb).save(path)
    result = run("convert", path, tmp_path, format="dicom")
    back = pydicom.dcmread(result["outputs"][0]["path"])
    assert back.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    np.testing.assert_array_equal(back.pixel_array, rgb)


# -- DICOM out for any operation on a DICOM input ----------------------------------------------------


def test_output_format_dicom_needs_a_dicom_input(tmp_path: Path) -> None:
    with pytest.raises(InputNotAccepted, match="output_format dicom needs a DICOM input"):
        run("blur", ANATOMICAL, tmp_path, output_format="dicom")


def test_blur_as_derived_dicom_keeps_study_and_units(tmp_path: Path) -> None:
    result = run("blur", CT, tmp_path, sigma=1.5, output_format="dicom")
    # the derived DICOM, its viewable preview, the input as shown, both in real units for windowing
    assert [o["role"] for o in result["outputs"]] == ["primary", "preview", "input", "values", "input_values"]
    back = pydicom.dcmread(result["outputs"][0]["path"])
    source = pydicom.dcmread(CT)
    assert back.StudyInstanceUID == source.StudyInstanceUID and back.PatientID == source.PatientID
    assert back.SeriesInstanceUID != source.SeriesInstanceUID and back.SOPInstanceUID != source.SOPInstanceUID
    assert "DERIVED" in back.ImageType and back.DerivationDescription == 'blur {"sigma":1.5}'
    expected = ndimage.gaussian_filter(hounsfield(CT).astype(np.float32), 1.5)
    real = apply_modality_lut(back.pixel_array, back)
    assert np.abs(real - expected).max() <= float(back.RescaleSlope) / 2 + 1e-3


def test_window_of_a_cine_as_dicom_stays_a_time_series(tmp_path: Path) -> None:
    result = run("window", CINE, tmp_path, center=128, width=256, output_format="dicom")
    back = pydicom.dcmread(result["outputs"][0]["path"])
    assert int(back.NumberOfFrames) == 2 and back.FrameIncrementPointer == pydicom.tag.Tag("FrameTime")
    decoded = imaging.load(result["outputs"][0]["path"])
    assert decoded.frames is not None and decoded.data.shape == (100, 100, 2)


# -- cine: frame by frame, never across time ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("window", {"center": 100, "width": 150}),
        ("normalize", {"method": "minmax"}),
        ("denoise", {"method": "median", "size": 5}),
        ("denoise", {"method": "bilateral", "size": 5}),
        ("edges", {"method": "sobel"}),
        ("edges", {"method": "canny", "sigma": 2}),
        ("equalize", {"clip_limit": 0.02}),
    ],
)
def test_cine_frames_are_processed_alone(name: str, params: dict) -> None:
    cine = imaging.load(CINE)
    assert cine.frames is not None
    together = apply(name, cine, **params)
    for t in range(cine.frame_count):
        alone = apply(name, cine.frame(t), **params)
        if name == "normalize":  # one map over the whole series: linear in each frame alone
            x = alone.data.astype(np.float64)
            assert np.corrcoef(x.ravel(), together.data[:, :, t].ravel())[0, 1] > 0.999999
            continue
        np.testing.assert_array_equal(together.data[:, :, t], alone.data)


# -- anonymize -------------------------------------------------------------------------------------------


def phi_slice(series_uid: str, instance: int, position: float) -> bytes:
    raw = ct_slice(
        np.full((6, 5), 1000 + instance, np.uint16),
        series_uid=series_uid,
        position=(0, 0, position),
        instance=instance,
    )
    ds = pydicom.dcmread(io.BytesIO(raw))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "MRN-424242", "19700101"
    ds.InstitutionName, ds.ReferringPhysicianName, ds.AccessionNumber = "St. Elsewhere", "House^G", "ACC99"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.77"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.2.1125.78"
    ds.add_new(0x00091010, "LO", "private note about Jane")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_anonymize_two_files_of_a_job_keeps_their_series_together(tmp_path: Path) -> None:
    first, second = tmp_path / "a.dcm", tmp_path / "b.dcm"
    first.write_bytes(phi_slice("1.2.826.0.1.3680043.2.1125.5", 1, 0.0))
    second.write_bytes(phi_slice("1.2.826.0.1.3680043.2.1125.5", 2, 2.5))
    backs = []
    for path in (first, second):
        out = tmp_path / path.stem
        out.mkdir()
        result = run("anonymize", path, out)  # the same job id: one UID mapping
        assert result["outputs"][0]["media_type"] == "application/dicom"
        assert "Burned In Annotation is not stated" in result["metadata"]["warnings"][0]
        backs.append(pydicom.dcmread(result["outputs"][0]["path"]))
        original = pydicom.dcmread(path)
        assert backs[-1].PixelData == original.PixelData  # pixel data unchanged
    a, b = backs
    assert a.SeriesInstanceUID == b.SeriesInstanceUID != "1.2.826.0.1.3680043.2.1125.5"
    assert a.StudyInstanceUID == b.StudyInstanceUID != "1.2.826.0.1.3680043.2.1125.77"
    assert a.SOPInstanceUID != b.SOPInstanceUID
    for ds in backs:
        text = str(ds)
        for phi in (
            "Doe^Jane",
            "MRN-424242",
            "19700101",
            "St. Elsewhere",
            "House^G",
            "ACC99",
            "private note",
        ):
            assert phi not in text
        assert (
            ds.PatientIdentityRemoved == "YES"
            and ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        )
    other_job = operations.run(
        "anonymize", {}, str(first), str(tmp_path), "other", job_id="0b0e2f3c-5a4d-4e5f-8a9b-1c2d3e4f5a6b"
    )
    assert pydicom.dcmread(other_job["outputs"][0]["path"]).SeriesInstanceUID != a.SeriesInstanceUID


@pytest.mark.parametrize("secret", ["", "short-but-not-empty"])
def test_anonymize_without_a_usable_secret_fails_naming_the_setting(
    secret: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No fallback to UIDs derived from the job id alone: the task fails, the message names the
    setting, and nothing is written."""
    source = tmp_path / "a.dcm"
    source.write_bytes(phi_slice("1.2.826.0.1.3680043.2.1125.5", 1, 0.0))
    out = tmp_path / "out"
    out.mkdir()
    if secret:
        monkeypatch.setenv("RADIOLOGY_ANONYMIZE_SECRET", secret)
    else:
        monkeypatch.delenv("RADIOLOGY_ANONYMIZE_SECRET")
    with pytest.raises(operations.OperationError, match="RADIOLOGY_ANONYMIZE_SECRET") as caught:
        run("anonymize", source, out)
    assert ("is not set" if not secret else "is too short (19 characters)") in str(caught.value)
    assert list(out.iterdir()) == []


def test_anonymize_uids_follow_the_server_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same job, input and secret give the same UIDs; another secret (another deployment)
    others, so the job id and the original UIDs are not enough to know the new ones."""
    source = tmp_path / "a.dcm"
    source.write_bytes(phi_slice("1.2.826.0.1.3680043.2.1125.5", 1, 0.0))
    series = []
    for k, secret in enumerate(["first-deployment-secret-0123456789abcdef"] * 2
                               + ["other-deployment-secret-0123456789abcdef"]):
        monkeypatch.setenv("RADIOLOGY_ANONYMIZE_SECRET", secret)
        out = tmp_path / f"out{k}"
        out.mkdir()
        back = pydicom.dcmread(run("anonymize", source, out)["outputs"][0]["path"])
        series.append((back.StudyInstanceUID, back.SeriesInstanceUID, back.SOPInstanceUID))
    first, again, other = series
    assert first == again
    assert all(a != b for a, b in zip(first, other, strict=True))


def test_anonymize_zip_renames_members_and_keeps_one_series(tmp_path: Path) -> None:
    zip_path = tmp_path / "Doe_Jane.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for k in range(3):
            zf.writestr(f"DOE_JANE/IM{k}.dcm", phi_slice("1.2.826.0.1.3680043.2.1125.6", k + 1, 2.5 * k))
        zf.writestr("DOE_JANE/notes.txt", "Jane Doe, MRN-424242")
    out = tmp_path / "out"
    out.mkdir()
    result = run("anonymize", zip_path, out)
    primary = result["outputs"][0]
    assert primary["filename"] == "scan_processed.zip" and result["metadata"]["files"] == 3
    with zipfile.ZipFile(primary["path"]) as zf:
        assert zf.namelist() == ["0001.dcm", "0002.dcm", "0003.dcm"]
        slices = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in zf.namelist()]
    assert len({s.SeriesInstanceUID for s in slices}) == 1
    assert all("Doe^Jane" not in str(s) for s in slices)
    assert imaging.load(primary["path"]).data.shape == (5, 6, 3)  # still one volume


def test_denoise_median_of_a_float32_volume_makes_no_extra_copy() -> None:
    data = np.random.default_rng(3).normal(0.0, 20.0, (96, 96, 96)).astype(np.float32)
    image = Image(data=data, kind="volume", affine=np.diag([0.9, 0.9, 1.2, 1.0]))
    tracemalloc.start()
    out = apply("denoise", image, method="median", size=3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(out.data, ndimage.median_filter(data, size=3, mode="reflect"))
    assert out.data.dtype == np.float32
    assert peak < 1.5 * data.nbytes  # the result only: no float32 copy of it


# -- every operation: previews of volume results, the input described ------------------------------


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve CT slices stored from head to feet (LPS voxel order) with a window."""
    zip_path = tmp_path_factory.mktemp("series") / "series.zip"
    rng = np.random.default_rng(8)
    with zipfile.ZipFile(zip_path, "w") as zf:
        for k in range(12):
            pixels = rng.integers(900, 1300, (20, 24)).astype(np.uint16)
            zf.writestr(f"{k}.dcm", ct_slice(pixels, series_uid="1.2.3.10", position=(-5.0, 7.0, -2.5 * k),
                                             instance=k + 1, window=(40, 400)))
    return zip_path


@pytest.mark.parametrize("name", [op["name"] for op in operations.catalogue()])
def test_every_operation_describes_its_input_and_previews_its_volume(
    name: str, ct_series: Path, tmp_path: Path
) -> None:
    """Each task result carries what its input was (format, modality, series, shape, spacing, the
    voxel axes' orientation codes, window, units); a volume result comes with axial, coronal and
    sagittal previews."""
    result = run(name, ct_series, tmp_path)
    meta = result["metadata"]
    source = imaging.load(ct_series)
    expected_codes = "".join(nib.aff2axcodes(source.affine))
    assert meta["format"] == "zip" and meta["modality"] == "CT"
    assert meta["orientation"] == expected_codes == "LPS"  # sorted along the normal: feet to head
    # an operation that gives its result other units or another window says what the input's were
    assert meta.get("input_units", meta.get("units")) == "HU"
    window = (meta.get("input_window_center", meta["window_center"]),
              meta.get("input_window_width", meta["window_width"]))
    assert window == (40.0, 400.0)
    assert meta.get("input_shape", meta["shape"]) == [24, 20, 12]
    assert meta["pixel_spacing"] == [0.8, 0.6] and meta["slice_thickness"] == 2.5
    if name != "anonymize":  # the profile removes the series description (X)
        assert meta["series_description"] == "synthetic"
    names = {o["filename"] for o in result["outputs"]}
    if name == "mip":  # a projection: one picture, not a volume
        assert "scan_processed.png" in names
    else:
        assert {"scan_preview.png", "scan_preview_coronal.png", "scan_preview_sagittal.png"} <= names


def test_a_result_with_its_own_window_and_units_keeps_the_inputs(ct_series: Path, tmp_path: Path) -> None:
    meta = run("window", ct_series, tmp_path, preset="lung")["metadata"]
    assert (meta["window_center"], meta["window_width"], meta["units"]) == (-600.0, 1500.0, "display 0-255")
    inputs = (meta["input_window_center"], meta["input_window_width"], meta["input_units"])
    assert inputs == (40.0, 400.0, "HU")


def _sobel_whole(values: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """The Sobel magnitude on the whole array at once: scipy's own sobel per axis ([-1, 0, 1] along
    it, [1, 2, 1] along each other axis of the first len(spacing), i.e. 2 x 4^(n-1) times the
    derivative per voxel), over the spacing."""
    x = values.astype(np.float64)
    n = len(spacing)
    scale = 2 * 4 ** (n - 1)
    total = np.zeros(x.shape)
    for a, s in enumerate(spacing):
        d = ndimage.correlate1d(x, [-1.0, 0.0, 1.0], axis=a, mode="reflect")
        for other in range(n):
            if other != a:
                d = ndimage.correlate1d(d, [1.0, 2.0, 1.0], axis=other, mode="reflect")
        total += (d / (scale * s)) ** 2
    return np.sqrt(total)


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((17, 13, 11), (0.7, 0.9, 2.5)), ((9, 10, 7, 3), (1.0, 1.0, 1.5)), ((23, 19), (0.5, 0.8))],
)
def test_sobel_in_slabs_equals_the_whole_array(
    shape: tuple, spacing: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slabs of two planes (the smallest that still has an inside), each with its neighbours' planes:
    the same magnitude as scipy's sobel on the whole array, edges mirrored, later axes left alone."""
    from services.processor.imaging import edges

    values = np.random.default_rng(11).normal(0, 100, shape).astype(np.int16)
    monkeypatch.setattr(edges, "SLAB_VALUES", 2 * int(np.prod(shape)) // min(shape[: len(spacing)]))
    for layout in (values, np.asfortranarray(values)):  # slabs along the first axis, then the last
        ours = edges.sobel_magnitude(layout, spacing)
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, _sobel_whole(values, spacing), rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(ours, edges._sobel_block(values, spacing))  # bit for bit


def test_sobel_of_a_volume_needs_much_less_than_two_more_volumes(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.processor.imaging import edges

    volume = np.random.default_rng(12).normal(0, 100, (96, 96, 96)).astype(np.float32)
    monkeypatch.setattr(edges, "SLAB_VALUES", 96 * 96 * 8)
    tracemalloc.start()
    try:
        out = edges.sobel_magnitude(volume, (0.9, 0.9, 1.2))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.6 * volume.nbytes, peak / volume.nbytes  # the result, plus a few slabs
    np.testing.assert_allclose(out, _sobel_whole(volume, (0.9, 0.9, 1.2)), rtol=1e-4, atol=1e-2)
