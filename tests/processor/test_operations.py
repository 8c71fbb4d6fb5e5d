"""The operations registry: catalogue, registration rules, params validation, accepted inputs, and
run() on every input kind."""

from __future__ import annotations

import io
import multiprocessing
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage
from scipy import ndimage

from services.common.task_types import is_valid_task_type
from services.processor import imaging, operations
from services.processor.imaging import outputs
from services.processor.operations import ParamsError, registry
from tests.processor.imaging.helpers import NIBABEL_DATA, ct_slice, dicom_file, high_frequency_energy
from tests.processor.narrow_ops import register_narrow_ops

# -- catalogue and params --------------------------------------------------------------------------


def test_schemas_give_a_form_order_main_params_first_output_format_last() -> None:
    for entry in operations.catalogue():
        schema = entry["params_schema"]
        order = schema["x-order"]
        assert sorted(order) == sorted(schema["properties"]) and len(set(order)) == len(order)
        assert "output_format" not in order or order[-1] == "output_format"
    schemas = {e["name"]: e["params_schema"] for e in operations.catalogue()}
    assert schemas["blur"]["x-order"] == ["sigma", "output_format"]
    assert schemas["resize"]["x-order"][:3] == ["width", "height", "keep_aspect"]


CONTRACT_OPERATIONS = [  # docs/imaging.md and the README, in their order
    "blur", "resize", "grayscale", "window", "normalize", "denoise", "edges", "equalize", "mip",
    "threshold", "reorient", "convert", "anonymize",
]
EVERY_INPUT = ["2d", "3d", "png", "jpeg", "dicom", "nifti", "dicom_series"]
VOLUMES_ONLY = ["3d", "dicom", "nifti", "dicom_series"]


def test_catalogue_lists_the_contract_operations_with_defaults() -> None:
    entries = {e["name"]: e for e in operations.catalogue()}
    assert [e["name"] for e in operations.catalogue()] == CONTRACT_OPERATIONS
    accepts = {name: EVERY_INPUT for name in entries}
    accepts.update(mip=VOLUMES_ONLY, reorient=VOLUMES_ONLY, anonymize=["2d", "3d", "dicom", "dicom_series"])
    for name, entry in entries.items():
        assert entry["title"] and entry["description"] and entry["outputs"]
        assert entry["accepts"] == accepts[name]
        schema = entry["params_schema"]
        assert schema["additionalProperties"] is False
        assert all("default" in prop for prop in schema["properties"].values())
        if name in ("convert", "anonymize"):  # convert's format is its output format; anonymize: DICOM
            assert "output_format" not in schema["properties"]
        else:
            assert schema["properties"]["output_format"]["enum"] == ["png", "jpeg", "dicom"]
    assert entries["blur"]["params_schema"]["properties"]["sigma"]["default"] == 2.0


def test_validate_fills_defaults() -> None:
    assert operations.validate_params("blur", None) == {"sigma": 2.0, "output_format": "png"}
    assert operations.validate_params("resize", {"width": 100}) == {
        "width": 100,
        "height": 512,
        "keep_aspect": False,
        "spacing": None,
        "shape": None,
        "output_format": "png",
    }
    assert operations.validate_params("resize", {"spacing": [1, 1, 2.5]})["spacing"] == [1, 1, 2.5]


@pytest.mark.parametrize(
    ("task_type", "params", "message"),
    [
        ("blur", {"sigma": 0}, "sigma must be greater than 0"),
        ("blur", {"sigma": 51}, "sigma must be at most 50"),
        ("blur", {"sigma": "big"}, "sigma must be a number"),
        (
            "blur",
            {"sigma": 1, "radius": 3},
            "Unknown parameter 'radius' for blur; allowed: sigma, output_format",
        ),
        ("blur", {"output_format": "gif"}, "output_format must be one of: png, jpeg, dicom"),
        ("resize", {"width": 0}, "width must be at least 1"),
        ("resize", {"height": 1.5}, "height must be a whole number"),
        ("resize", {"keep_aspect": "yes"}, "keep_aspect must be true or false"),
        ("resize", {"spacing": -1}, "spacing must be a voxel size in mm"),
        ("resize", {"shape": [10, 10]}, "shape must be a list of 3 whole numbers"),
        ("resize", {"spacing": 1, "shape": [2, 2, 2]}, "Give either spacing or shape"),
        ("sharpen", {}, "Unknown task_type 'sharpen'; available operations: anonymize, blur, convert, "
         "denoise, edges, equalize, grayscale, mip, normalize, reorient, resize, threshold, window"),
    ],
)
def test_bad_params_have_readable_messages(task_type: str, params: dict, message: str) -> None:
    with pytest.raises(ParamsError) as caught:
        operations.validate_params(task_type, params)
    assert str(caught.value).startswith(message)


def test_params_must_be_an_object() -> None:
    with pytest.raises(ParamsError, match="params must be a JSON object"):
        operations.validate_params("blur", [1, 2])  # type: ignore[arg-type]


# -- inputs ----------------------------------------------------------------------------------------


def _photo(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    smooth = ndimage.gaussian_filter(rng.random(shape), (6, 6) + (0,) * (len(shape) - 2))
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return np.clip(smooth * 200 + 20 + rng.normal(0, 15, shape), 0, 255)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(5)
    PILImage.fromarray(_photo(rng, (96, 128)).astype(np.uint8)).save(d / "grey.png")
    PILImage.fromarray(_photo(rng, (96, 128, 3)).astype(np.uint8)).save(d / "colour.png")
    rgba = np.dstack([_photo(rng, (96, 128, 3)), np.full((96, 128), 255.0)]).astype(np.uint8)
    PILImage.fromarray(rgba).save(d / "alpha.png")
    PILImage.fromarray((_photo(rng, (96, 128)) * 250).astype(np.uint16)).save(d / "deep.png")
    PILImage.fromarray(_photo(rng, (96, 128, 3)).astype(np.uint8)).save(d / "photo.jpg", quality=95)
    with zipfile.ZipFile(d / "series.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for k in range(8):
            pixels = (_photo(rng, (32, 24)) * 4 + 500).astype(np.uint16)
            zf.writestr(
                f"s/{(k * 5) % 8}.dcm",
                ct_slice(pixels, series_uid="1.9", position=(0.0, 0.0, 3.0 * k), window=(40, 400)),
            )
    files = {
        "png_grey": d / "grey.png",
        "png_rgb": d / "colour.png",
        "png_rgba": d / "alpha.png",
        "png_16bit": d / "deep.png",
        "jpeg": d / "photo.jpg",
        "dicom_ct": dicom_file("CT_small.dcm"),
        "dicom_rle": dicom_file("MR_small_RLE.dcm"),
        "dicom_j2k": dicom_file("MR_small_jp2klossless.dcm"),
        "dicom_multiframe": dicom_file("rtdose.dcm"),
        "dicom_rgb_multiframe": dicom_file("SC_rgb_rle_2frame.dcm"),
        "nifti_3d": NIBABEL_DATA / "anatomical.nii",
        "nifti_4d": NIBABEL_DATA / "example4d.nii.gz",
        "dicom_series_zip": d / "series.zip",
    }
    return files


VOLUMES = {"dicom_multiframe", "nifti_3d", "nifti_4d", "dicom_series_zip"}
CINES = {"dicom_rgb_multiframe"}  # frames in time, no positions: 2D frame by frame, NIfTI x, y, 1, t


def _run(task_type: str, params: dict, path: Path, out_dir: Path) -> tuple[dict, list]:
    calls: list = []
    result = operations.run(
        task_type, params, str(path), str(out_dir), "scan", progress=lambda p, m: calls.append((p, m))
    )
    assert calls == [(40, "decoded"), (70, "processed")]
    return result, calls


def _read_output(result: dict) -> np.ndarray:
    primary = result["outputs"][0]
    assert primary["role"] == "primary" and Path(primary["path"]).is_file()
    if primary["filename"].endswith(".nii.gz"):
        data = np.asanyarray(nib.load(primary["path"]).dataobj)
        if "frame_axis" in result["metadata"]:  # (column, row, 1, frame) -> (row, column, frame)
            data = np.swapaxes(data[:, :, 0], 0, 1)
        return data
    with PILImage.open(primary["path"]) as pil:
        return np.asarray(pil)


def _input_as_written(path: Path) -> tuple[np.ndarray, int]:
    """The input in the units of its output: display values for 2D, real values for volumes."""
    image = imaging.load(path)
    if image.kind == "2d":
        values, _ = outputs.display_array(image)
        return values, 2
    return image.data, 3


@pytest.mark.parametrize(
    "kind",
    sorted(
        [
            "png_grey",
            "png_rgb",
            "png_rgba",
            "png_16bit",
            "jpeg",
            "dicom_ct",
            "dicom_rle",
            "dicom_j2k",
            "dicom_multiframe",
            "dicom_rgb_multiframe",
            "nifti_3d",
            "nifti_4d",
            "dicom_series_zip",
        ]
    ),
)
def test_blur_really_blurs(kind: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    sigma = 20.0 if kind == "dicom_multiframe" else 2.0  # RT dose: smooth, voxels 10 x 10 x 5 mm
    result, _ = _run("blur", {"sigma": sigma}, inputs[kind], tmp_path)
    before, spatial = _input_as_written(inputs[kind])
    after = _read_output(result)
    if after.dtype.names:  # RGB24 NIfTI
        after = np.stack([after[c] for c in after.dtype.names], axis=-1)
    assert after.shape == before.shape
    assert high_frequency_energy(after, spatial) < 0.6 * high_frequency_energy(before, spatial)
    spread = float(before.max()) - float(before.min())
    assert abs(float(after.mean()) - float(before.mean())) < 0.03 * spread + 1
    meta = result["metadata"]
    assert meta["shape"] == list(before.shape) and meta["operation"] == "blur"
    from_dicom = kind.startswith("dicom")  # a browser cannot show these: the input comes along
    if kind in VOLUMES | CINES:
        previews = ["preview"] if kind in CINES else ["preview"] * 3  # axial, coronal, sagittal
        roles = ["primary", *previews, "input"] if from_dicom else ["primary", *previews]
        assert [o["role"] for o in result["outputs"]] == roles
        assert result["outputs"][0]["filename"] == "scan_processed.nii.gz"
        with PILImage.open(result["outputs"][1]["path"]) as preview:
            assert preview.format == "PNG" and preview.size[0] > 1
    else:
        names = ["scan_processed.png"]
        if from_dicom:  # the input to compare, and both in real units for windowing
            names += ["scan_input.png", "scan_values.nii.gz", "scan_input_values.nii.gz"]
        assert [o["filename"] for o in result["outputs"]] == names


@pytest.mark.parametrize(
    "kind",
    [
        "png_grey",
        "png_rgba",
        "png_16bit",
        "jpeg",
        "dicom_ct",
        "nifti_4d",
        "dicom_series_zip",
        "dicom_rgb_multiframe",
    ],
)
def test_resize_shapes(kind: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    if kind in VOLUMES:
        result, _ = _run("resize", {"shape": [20, 16, 6]}, inputs[kind], tmp_path)
        source = imaging.load(inputs[kind])
        out = nib.load(result["outputs"][0]["path"])
        assert (
            out.shape[:3] == (20, 16, 6)
            and out.shape[3:] == source.data.shape[3 : 4 if kind == "nifti_4d" else 3]
        )
        # the same field of view: the first voxel corner stays put
        corner = [-0.5, -0.5, -0.5, 1.0]
        assert np.allclose(out.affine @ corner, source.affine @ corner, atol=1e-3)
    else:
        result, _ = _run("resize", {"width": 60, "height": 40}, inputs[kind], tmp_path)
        out = _read_output(result)
        assert out.shape[:2] == (40, 60)
        fit, _ = _run("resize", {"width": 60, "height": 60, "keep_aspect": True}, inputs[kind], tmp_path)
        source_rows, source_cols = imaging.load(inputs[kind]).data.shape[:2]
        assert _read_output(fit).shape[:2] == (round(60 * source_rows / source_cols), 60)


def test_resize_volume_to_spacing(inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("resize", {"spacing": 4.0}, inputs["nifti_3d"], tmp_path)
    out = nib.load(result["outputs"][0]["path"])
    assert out.shape == (16, 20, 12)  # 33 x 41 x 25 voxels of 2 mm
    assert result["metadata"]["spacing"] == pytest.approx([33 * 2 / 16, 41 * 2 / 20, 25 * 2 / 12], abs=1e-4)


def test_resize_default_is_512(inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("resize", {}, inputs["png_rgb"], tmp_path)
    assert _read_output(result).shape == (512, 512, 3)


@pytest.mark.parametrize(
    ("kind", "expected_mode"),
    [
        ("png_rgb", "L"),
        ("png_rgba", "LA"),
        ("png_grey", "L"),
        ("png_16bit", "I;16"),
        ("jpeg", "L"),
        ("dicom_ct", "L"),
    ],
)
def test_grayscale_2d(kind: str, expected_mode: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("grayscale", {}, inputs[kind], tmp_path)
    with PILImage.open(result["outputs"][0]["path"]) as pil:
        assert pil.mode == expected_mode
        out = np.asarray(pil)
    source = imaging.load(inputs[kind])
    if source.samples.startswith("RGB"):
        r, g, b = (source.data[..., c].astype(float) for c in range(3))
        expected = np.rint(0.299 * r + 0.587 * g + 0.114 * b)
        grey = out[..., 0] if out.ndim == 3 else out
        assert np.abs(grey.astype(float) - expected).max() <= 1
    elif source.display.native:
        assert np.array_equal(out, source.data)  # already grey: unchanged


def test_grayscale_volumes(inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("grayscale", {}, inputs["dicom_rgb_multiframe"], tmp_path)
    assert nib.load(result["outputs"][0]["path"]).shape == (100, 100, 1, 2)  # x, y, 1, t
    result, _ = _run("grayscale", {}, inputs["nifti_3d"], tmp_path)
    out = nib.load(result["outputs"][0]["path"])
    source = nib.load(inputs["nifti_3d"])
    assert np.array_equal(np.asanyarray(out.dataobj), np.asanyarray(source.dataobj))
    assert out.get_data_dtype() == np.int16  # whole numbers keep their integer type


def test_nifti_outputs_keep_affine_and_codes(inputs: dict[str, Path], tmp_path: Path) -> None:
    for name in ("nifti_3d", "nifti_4d"):
        result, _ = _run("blur", {"sigma": 3.0}, inputs[name], tmp_path)
        out, source = nib.load(result["outputs"][0]["path"]), nib.load(inputs[name])
        assert out.shape == source.shape
        assert np.allclose(out.affine, source.affine, atol=1e-5)
        assert int(out.header["qform_code"]) == int(source.header["qform_code"])
        assert int(out.header["sform_code"]) == int(source.header["sform_code"])
        assert out.get_data_dtype() == np.float32


def test_blur_of_tiny_voxels_is_capped_and_quick(tmp_path: Path) -> None:
    # 1e-6 mm voxels make sigma 2 mm two million voxels: capped at twice each axis, the blur is the mean
    values = np.random.default_rng(3).normal(100.0, 10.0, (64, 64, 32)).astype(np.float32)
    path = tmp_path / "tiny.nii.gz"
    nib.save(nib.Nifti1Image(values, np.diag([1e-6, 1e-6, 1e-6, 1.0])), path)
    start = time.monotonic()
    result, _ = _run("blur", {"sigma": 2.0}, path, tmp_path)
    assert time.monotonic() - start < 3.0
    assert result["metadata"]["sigma_voxels"] == [128.0, 128.0, 64.0]
    assert np.allclose(_read_output(result), values.mean(), atol=1e-3)


def test_resize_refuses_axes_longer_than_nifti_holds(inputs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"would be 1 x 1 x 500000 voxels; at most 32767 .* each axis"):
        operations.run("resize", {"spacing": [100, 100, 0.0001]}, str(inputs["nifti_3d"]), str(tmp_path), "r")
    with pytest.raises(ParamsError, match="at most 268435456 are allowed"):
        operations.run("resize", {"spacing": 1e-9}, str(inputs["nifti_3d"]), str(tmp_path), "r")


def test_4d_blur_does_not_mix_time_points(inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("blur", {"sigma": 4.0}, inputs["nifti_4d"], tmp_path)
    source = imaging.load(inputs["nifti_4d"])
    out = np.asanyarray(nib.load(result["outputs"][0]["path"]).dataobj)
    sigmas = imaging.sigmas_in_voxels(4.0, source.spacing)
    alone = imaging.gaussian_blur(source.data[..., 1], sigmas)
    assert np.allclose(out[..., 1], alone, atol=1e-3)


def test_dicom_volume_output_is_in_hounsfield_units(inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("grayscale", {}, inputs["dicom_series_zip"], tmp_path)
    out = nib.load(result["outputs"][0]["path"])
    assert out.get_data_dtype() == np.int16
    assert np.asanyarray(out.dataobj).min() < 0  # stored values minus 1024
    assert np.allclose(np.diag(out.affine)[:3], [-0.6, -0.8, 3.0])
    assert result["metadata"]["modality"] == "CT" and result["metadata"]["format"] == "zip"


def test_dicom_2d_output_is_windowed_8bit(inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("blur", {"sigma": 1.0}, inputs["dicom_ct"], tmp_path)
    with PILImage.open(result["outputs"][0]["path"]) as pil:
        assert pil.mode == "L" and pil.size == (128, 128)
    meta = result["metadata"]
    assert meta["format"] == "dicom" and meta["modality"] == "CT" and meta["shape"] == [128, 128]


def test_jpeg_output_format(inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("blur", {"output_format": "jpeg"}, inputs["png_rgba"], tmp_path)
    primary = result["outputs"][0]
    assert primary["filename"] == "scan_processed.jpg" and primary["media_type"] == "image/jpeg"
    with PILImage.open(primary["path"]) as pil:
        assert pil.format == "JPEG" and pil.mode == "RGB"


def test_16bit_png_stays_16bit(inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("blur", {}, inputs["png_16bit"], tmp_path)
    out = _read_output(result)
    assert out.dtype == np.uint16 and out.max() > 255


def test_bad_inputs_raise_imaging_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    with pytest.raises(imaging.ImagingError, match="Unsupported file type"):
        operations.run("blur", {}, str(junk), str(tmp_path), "junk")
    with pytest.raises(imaging.ImagingError, match="DICOM pixel data is truncated"):
        operations.run("blur", {}, str(dicom_file("MR_truncated.dcm")), str(tmp_path), "mr")
    with pytest.raises(ParamsError):
        operations.run("blur", {"sigma": -1}, str(dicom_file("CT_small.dcm")), str(tmp_path), "ct")
    assert list(tmp_path.iterdir()) == [junk]  # nothing written


def test_run_works_in_a_spawned_process_pool(inputs: dict[str, Path], tmp_path: Path) -> None:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        result = pool.submit(
            operations.run, "blur", {}, str(inputs["png_grey"]), str(tmp_path), "pooled"
        ).result(60)
    assert result["outputs"][0]["filename"] == "pooled_processed.png"
    assert (tmp_path / "pooled_processed.png").is_file()


# -- the input as a viewable output (DICOM is not shown by browsers) -------------------------------


def _by_role(result: dict) -> dict[str, dict]:
    """The first output of each role (a volume has three previews, axial first)."""
    roles = [o["role"] for o in result["outputs"]]
    assert roles[0] == "primary" and roles.count("primary") == 1 and roles.count("input") <= 1
    by_role: dict[str, dict] = {}
    for o in result["outputs"]:
        by_role.setdefault(o["role"], o)
    return by_role


def _png(path: str) -> np.ndarray:
    with PILImage.open(path) as pil:
        assert pil.format == "PNG"
        return np.asarray(pil)


@pytest.fixture(scope="module")
def grey_dicoms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic CT slices: MONOCHROME1 with a window, no window at all, a one-slice series ZIP."""
    d = tmp_path_factory.mktemp("grey")
    rng = np.random.default_rng(11)
    pixels = (_photo(rng, (40, 56)) * 6 + 600).astype(np.uint16)
    (d / "mono1.dcm").write_bytes(
        ct_slice(pixels, series_uid="2.1", position=(0, 0, 0), photometric="MONOCHROME1", window=(40, 300))
    )
    (d / "nowindow.dcm").write_bytes(ct_slice(pixels, series_uid="2.2", position=(0, 0, 0)))
    with zipfile.ZipFile(d / "one.zip", "w") as zf:
        zf.writestr("only.dcm", ct_slice(pixels, series_uid="2.3", position=(0, 0, 0), window=(40, 400)))
    return {"mono1": d / "mono1.dcm", "nowindow": d / "nowindow.dcm", "one_slice_zip": d / "one.zip"}


@pytest.mark.parametrize("kind", ["dicom_ct", "dicom_rle", "dicom_j2k", "mono1", "nowindow", "one_slice_zip"])
def test_2d_dicom_input_png_is_on_the_grey_scale_of_the_result(
    kind: str, inputs: dict[str, Path], grey_dicoms: dict[str, Path], tmp_path: Path
) -> None:
    path = inputs.get(kind) or grey_dicoms[kind]
    # A blur this small changes nothing visible: before and after must then look the same, which
    # they only do when both went through the same VOI LUT / window / MONOCHROME1 inversion.
    result, _ = _run("blur", {"sigma": 0.01}, path, tmp_path)
    outs = _by_role(result)
    assert list(outs) == ["primary", "input", "values", "input_values"]
    assert outs["input"]["filename"] == "scan_input.png" and outs["input"]["media_type"] == "image/png"
    before, after = _png(outs["input"]["path"]), _png(outs["primary"]["path"])
    assert before.shape == after.shape == tuple(result["metadata"]["input_shape"])
    assert before.dtype == after.dtype == np.uint8
    assert np.abs(before.astype(int) - after.astype(int)).max() <= 1
    assert before.std() > 5  # a real picture, not a flat one
    expected, _ = outputs.display_array(imaging.load(path))
    assert np.array_equal(before, expected)  # the unprocessed input


def test_monochrome1_input_png_is_inverted_like_the_result(
    grey_dicoms: dict[str, Path], tmp_path: Path
) -> None:
    result, _ = _run("blur", {"sigma": 0.01}, grey_dicoms["mono1"], tmp_path)
    before = _png(_by_role(result)["input"]["path"]).astype(int)
    image = imaging.load(grey_dicoms["mono1"])
    assert image.display.invert
    real = image.data.astype(float)
    # higher HU is darker in MONOCHROME1
    assert before[real > np.percentile(real, 90)].mean() < before[real < np.percentile(real, 10)].mean()


def test_input_png_of_a_resized_dicom_keeps_the_input_size(inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("resize", {"width": 300, "height": 200}, inputs["dicom_ct"], tmp_path)
    outs = _by_role(result)
    assert _png(outs["primary"]["path"]).shape == (200, 300)
    assert _png(outs["input"]["path"]).shape == (128, 128)


def test_input_png_uses_the_fast_png_settings(inputs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    from services.processor.imaging import io_raster

    levels: list[int] = []
    encode = io_raster.imagecodecs.png_encode

    def spy(data, level=None, **kw):
        levels.append(level)
        return encode(data, level=level, **kw)

    monkeypatch.setattr(io_raster.imagecodecs, "png_encode", spy)
    _run("blur", {}, inputs["dicom_ct"], tmp_path)
    assert levels == [io_raster.PNG_COMPRESS_LEVEL] * 2


def test_2d_dicom_result_and_input_come_in_real_units_for_windowing(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    """Besides the display PNGs, a grey 2D DICOM task writes the result and the input as float32
    NIfTI slices in real units (HU) placed by the DICOM geometry, so that a viewer can window them."""
    import pydicom

    ds = pydicom.dcmread(inputs["dicom_ct"])
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    result, _ = _run("blur", {"sigma": 1.5}, inputs["dicom_ct"], tmp_path)
    outs = _by_role(result)
    assert outs["values"]["filename"] == "scan_values.nii.gz"
    assert outs["input_values"]["filename"] == "scan_input_values.nii.gz"
    assert outs["values"]["media_type"] == outs["input_values"]["media_type"] == "application/gzip"
    source, processed = nib.load(outs["input_values"]["path"]), nib.load(outs["values"]["path"])
    assert source.get_data_dtype() == processed.get_data_dtype() == np.float32
    rows, cols = hu.shape
    assert source.shape == processed.shape == (cols, rows, 1)
    # voxel (column, row) holds the pixel at (row, column), in HU, unprocessed for the input
    np.testing.assert_array_equal(np.asanyarray(source.dataobj)[:, :, 0].T, hu.astype(np.float32))
    blurred = np.asanyarray(processed.dataobj)[:, :, 0].T
    assert abs(float(blurred.mean()) - float(hu.mean())) < 0.01 * float(np.ptp(hu))
    assert high_frequency_energy(blurred, 2) < 0.6 * high_frequency_energy(hu, 2)
    # the affine maps voxel (column, row) to the patient position of that pixel (DICOM PS3.3
    # C.7.6.2.1.1, LPS), in NIfTI's RAS: x and y negated
    ipp, iop = np.array(ds.ImagePositionPatient, float), np.array(ds.ImageOrientationPatient, float)
    row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
    for c, r in [(0, 0), (cols - 1, 0), (5, 17)]:
        lps = ipp + iop[:3] * col_sp * c + iop[3:] * row_sp * r
        np.testing.assert_allclose(source.affine @ [c, r, 0, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-4)
    np.testing.assert_allclose(processed.affine, source.affine)
    assert source.header.get_xyzt_units()[0] == "mm"


def test_2d_dicom_without_pixel_spacing_says_its_unit_is_unknown(tmp_path: Path) -> None:
    pixels = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) + 1000
    path = tmp_path / "nospacing.dcm"
    data = ct_slice(pixels, series_uid="3.1", position=None)
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    del ds.PixelSpacing
    ds.save_as(path)
    (tmp_path / "out").mkdir()
    result, _ = _run("blur", {"sigma": 0.01}, path, tmp_path / "out")
    values = nib.load(_by_role(result)["input_values"]["path"])
    assert values.header.get_xyzt_units()[0] == "unknown"
    np.testing.assert_array_equal(np.asanyarray(values.dataobj)[:, :, 0].T, pixels.astype(np.float32) - 1024)


def test_dicom_metadata_names_patient_study_and_series(inputs: dict[str, Path], tmp_path: Path) -> None:
    """The keys a viewer groups results by, read back from pydicom."""
    import pydicom

    ds = pydicom.dcmread(inputs["dicom_ct"])
    result, _ = _run("blur", {}, inputs["dicom_ct"], tmp_path)
    meta = result["metadata"]
    assert meta["patient_id"] == ds.PatientID
    assert meta["study_instance_uid"] == ds.StudyInstanceUID
    assert meta["series_instance_uid"] == ds.SeriesInstanceUID
    assert meta["series_number"] == int(ds.SeriesNumber)
    assert meta["study_date"] == ds.StudyDate
    assert meta["modality"] == "CT"
    np.testing.assert_allclose(meta["image_position_patient"], [float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_allclose(
        meta["image_orientation_patient"], [float(v) for v in ds.ImageOrientationPatient]
    )
    assert "patient_name" not in meta and "PatientName" not in meta


@pytest.mark.parametrize("kind", ["dicom_multiframe", "dicom_series_zip", "dicom_rgb_multiframe"])
def test_dicom_volume_input_is_a_nifti_in_real_units_on_the_result_grid(
    kind: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    result, _ = _run("blur", {"sigma": 0.01}, inputs[kind], tmp_path)
    outs = _by_role(result)
    assert list(outs) == ["primary", "preview", "input"]
    previews = [o["filename"] for o in result["outputs"] if o["role"] == "preview"]
    if kind != "dicom_rgb_multiframe":  # a volume: its three planes; a cine: its middle frame
        assert previews == ["scan_preview.png", "scan_preview_coronal.png", "scan_preview_sagittal.png"]
    assert outs["input"]["filename"] == "scan_input.nii.gz"
    assert outs["input"]["media_type"] == "application/gzip"
    processed, source = nib.load(outs["primary"]["path"]), nib.load(outs["input"]["path"])
    assert source.shape == processed.shape
    np.testing.assert_array_equal(source.affine, processed.affine)
    assert int(source.header["sform_code"]) == int(processed.header["sform_code"])
    decoded = imaging.load(inputs[kind])
    data = np.asanyarray(source.dataobj)
    if data.dtype.names:  # RGB24
        data = np.stack([data[c] for c in data.dtype.names], axis=-1)
    if decoded.frames is not None:  # (column, row, 1, frame) -> (row, column, frame)
        data = np.swapaxes(data[:, :, 0], 0, 1)
    np.testing.assert_array_equal(data, decoded.data)  # unprocessed, real units (HU, Gy, ...)
    if kind == "dicom_series_zip":
        assert source.get_data_dtype() == np.int16 and data.min() < 0  # HU: stored minus 1024


def test_volume_input_keeps_its_own_grid_when_the_result_is_resampled(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    result, _ = _run("resize", {"shape": [12, 10, 4]}, inputs["dicom_series_zip"], tmp_path)
    outs = _by_role(result)
    decoded = imaging.load(inputs["dicom_series_zip"])
    source = nib.load(outs["input"]["path"])
    assert nib.load(outs["primary"]["path"]).shape == (12, 10, 4)
    assert source.shape == decoded.data.shape == (24, 32, 8)
    np.testing.assert_allclose(source.affine, decoded.affine, atol=1e-6)


@pytest.mark.parametrize("kind", ["png_grey", "png_rgb", "jpeg", "png_16bit", "nifti_3d", "nifti_4d"])
def test_viewable_inputs_get_no_input_output(kind: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("grayscale", {}, inputs[kind], tmp_path)
    assert "input" not in [o["role"] for o in result["outputs"]]
    assert not list(tmp_path.glob("*_input.*"))


# -- threshold -------------------------------------------------------------------------------------


def test_threshold_params() -> None:
    defaults = {"lower": None, "upper": None, "output_format": "png"}
    assert operations.validate_params("threshold", None) == defaults
    with pytest.raises(ParamsError, match="lower .* must not be above upper"):
        operations.validate_params("threshold", {"lower": 5, "upper": 1})
    with pytest.raises(ParamsError, match="lower must be a number or null"):
        operations.validate_params("threshold", {"lower": "high"})


def test_threshold_2d_is_a_black_and_white_png_of_the_band(inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("threshold", {"lower": 100, "upper": 180}, inputs["png_grey"], tmp_path)
    mask = _read_output(result)
    grey = np.asarray(PILImage.open(inputs["png_grey"]))
    assert mask.dtype == np.uint8 and mask.shape == grey.shape
    assert np.array_equal(mask == 255, (grey >= 100) & (grey <= 180)) and set(np.unique(mask)) <= {0, 255}
    assert result["metadata"]["content"] == "mask" and result["metadata"]["threshold_method"] == "manual"
    assert result["metadata"]["mask_voxels"] == int(np.count_nonzero(mask))


def test_threshold_of_a_ct_is_in_hounsfield_units(inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("threshold", {"lower": 100}, inputs["dicom_ct"], tmp_path)
    mask = _read_output(result) == 255
    hu = imaging.load(inputs["dicom_ct"]).data
    assert np.array_equal(mask, hu >= 100)
    # the mask has no real units; the input has
    assert [o["role"] for o in result["outputs"]] == ["primary", "input", "input_values"]


def test_threshold_volume_is_a_uint8_mask_on_the_input_grid(inputs: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _run("threshold", {}, inputs["nifti_3d"], tmp_path)
    source = nib.load(inputs["nifti_3d"])
    out = nib.load(result["outputs"][0]["path"])
    mask = np.asanyarray(out.dataobj)
    assert out.get_data_dtype() == np.uint8 and mask.shape == source.shape
    assert set(np.unique(mask)) == {0, 1}
    assert np.allclose(out.affine, source.affine)
    meta = result["metadata"]
    assert meta["threshold_method"] == "otsu"
    assert np.array_equal(mask == 1, np.asanyarray(source.dataobj) >= meta["threshold_lower"])
    voxel_ml = float(np.prod(source.header.get_zooms()[:3])) / 1000
    assert meta["mask_volume_ml"] == pytest.approx(mask.sum() * voxel_ml, rel=1e-3)


def test_presets_are_titled_and_valid() -> None:
    entries = {e["name"]: e["params_schema"] for e in operations.catalogue()}
    for name in ("blur", "resize", "threshold"):
        presets = entries[name]["examples"]
        assert presets and all(isinstance(p["x-title"], str) and p["x-title"] for p in presets)
        for preset in presets:
            operations.validate_params(name, operations.preset_params(preset))


# -- the registry's rules --------------------------------------------------------------------------


@pytest.fixture
def own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations in the test stay in the test."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_VALIDATORS", dict(registry._VALIDATORS))


def test_every_operation_name_is_a_task_type_the_jobs_service_accepts() -> None:
    assert [e["name"] for e in operations.catalogue()] == CONTRACT_OPERATIONS
    assert all(is_valid_task_type(e["name"]) for e in operations.catalogue())


@pytest.mark.parametrize("name", ["Blur", "edge-detect", "blur.3d", "blur*", "", "x" * 65, "blur 2"])
def test_a_name_the_jobs_service_refuses_does_not_register(name: str, own_registry: None) -> None:
    blur = operations.get("blur")
    with pytest.raises(ValueError, match="is not a task type: 1-64 characters of a-z 0-9 _"):
        operations.register(replace(blur, name=name))
    assert name not in [e["name"] for e in operations.catalogue()]


def test_registration_refuses_what_would_break_later(own_registry: None) -> None:
    blur = operations.get("blur")
    with pytest.raises(ValueError, match="registered twice"):
        operations.register(blur)
    with pytest.raises(ValueError, match="kinds must be some of 2d, 3d"):
        operations.register(replace(blur, name="b1", kinds=("volume",)))
    with pytest.raises(ValueError, match="formats must be some of png, jpeg, dicom, nifti, dicom_series"):
        operations.register(replace(blur, name="b2", formats=("zip",)))
    with pytest.raises(ValueError, match="formats must be some of"):
        operations.register(replace(blur, name="b3", formats=()))
    bad_preset = {**blur.params_schema, "examples": [{"x-title": "Too much", "sigma": 500}]}
    with pytest.raises(ValueError, match="preset its schema refuses: sigma must be at most 50"):
        operations.register(replace(blur, name="b4", params_schema=bad_preset))
    with pytest.raises(ValueError, match="exactly one of apply and run_file"):
        operations.register(replace(blur, name="b5", apply=None))
    assert [e["name"] for e in operations.catalogue()] == CONTRACT_OPERATIONS


def test_catalogue_shows_kinds_then_formats_in_a_fixed_order(own_registry: None) -> None:
    register_narrow_ops()
    accepts = {e["name"]: e["accepts"] for e in operations.catalogue()}
    assert accepts["volume_blur"] == ["3d", "png", "jpeg", "dicom", "nifti", "dicom_series"]
    assert accepts["dicom_blur"] == ["2d", "3d", "dicom", "dicom_series"]  # listed in any order


ONLY_DICOM = "it accepts DICOM or DICOM series (ZIP)"


@pytest.mark.parametrize(
    ("task_type", "kind", "message"),
    [
        ("volume_blur", "png_grey", "volume_blur does not accept a 2D image; it needs a 3D volume"),
        ("volume_blur", "dicom_ct", "volume_blur does not accept a 2D image; it needs a 3D volume"),
        ("dicom_blur", "png_rgb", f"dicom_blur does not accept PNG files; {ONLY_DICOM}"),
        ("dicom_blur", "jpeg", f"dicom_blur does not accept JPEG files; {ONLY_DICOM}"),
        ("dicom_blur", "nifti_3d", f"dicom_blur does not accept NIfTI files; {ONLY_DICOM}"),
    ],
)
def test_an_input_the_operation_does_not_accept_is_refused(
    task_type: str, kind: str, message: str, inputs: dict[str, Path], tmp_path: Path, own_registry: None
) -> None:
    register_narrow_ops()
    with pytest.raises(operations.InputNotAccepted) as caught:
        operations.run(task_type, {}, str(inputs[kind]), str(tmp_path), "scan")
    assert str(caught.value) == message
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_refused_format_is_refused_before_decoding(tmp_path: Path, own_registry: None) -> None:
    register_narrow_ops()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # would fail to decode
    with pytest.raises(operations.InputNotAccepted, match="does not accept PNG files"):
        operations.run("dicom_blur", {}, str(broken), str(tmp_path), "scan")


@pytest.mark.parametrize(
    ("task_type", "kind"),
    [
        ("volume_blur", "nifti_3d"),
        ("volume_blur", "dicom_series_zip"),
        ("volume_blur", "dicom_multiframe"),
        ("dicom_blur", "dicom_ct"),
        ("dicom_blur", "dicom_series_zip"),
    ],
)
def test_an_accepted_input_runs(
    task_type: str, kind: str, inputs: dict[str, Path], tmp_path: Path, own_registry: None
) -> None:
    register_narrow_ops()
    result, _ = _run(task_type, {"sigma": 0.5}, inputs[kind], tmp_path)
    assert result["metadata"]["operation"] == task_type
