"""Every accepted input kind through every seed operation, checked by opening the outputs."""

from __future__ import annotations

import gzip
import io
import zipfile

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.e2e.conftest import (
    NIBABEL_FILES,
    PYDICOM_FILES,
    client,
    download,
    jpeg_bytes,
    png_bytes,
    submit,
    wait_job,
)


def _dicom_series_zip() -> bytes:
    """Five CT slices of one series, shuffled in the archive, as a scanner export would give."""
    base = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in [3, 0, 4, 1, 2]:
            ds = base.copy()
            ds.InstanceNumber = i + 1
            ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + 2.5 * i]
            ds.SliceThickness = 2.5
            ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{i + 1}"
            ds.PixelData = (ds.pixel_array + 10 * i).astype(ds.pixel_array.dtype).tobytes()
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
            z.writestr(f"series/slice{i}.dcm", out.getvalue())
    return buf.getvalue()


INPUTS = {
    "png": ("scan.png", lambda: png_bytes((96, 64)), "2d", (64, 96)),
    "png_rgb": ("colour.png", lambda: png_bytes((96, 64), "RGB"), "2d", (64, 96)),
    "jpeg": ("photo.jpg", lambda: jpeg_bytes((80, 60)), "2d", (60, 80)),
    "ct_small": ("CT_small.dcm", lambda: (PYDICOM_FILES / "CT_small.dcm").read_bytes(), "2d", (128, 128)),
    "mr_small": ("MR_small.dcm", lambda: (PYDICOM_FILES / "MR_small.dcm").read_bytes(), "2d", (64, 64)),
    "mr_rle": ("MR_small_RLE.dcm", lambda: (PYDICOM_FILES / "MR_small_RLE.dcm").read_bytes(), "2d", (64, 64)),
    "jpeg2000": ("JPEG2000.dcm", lambda: (PYDICOM_FILES / "JPEG2000.dcm").read_bytes(), "2d", (1024, 256)),
    "multiframe": ("rtdose.dcm", lambda: (PYDICOM_FILES / "rtdose.dcm").read_bytes(), "3d", (10, 10, 15)),
    "anatomical": ("anatomical.nii", lambda: (NIBABEL_FILES / "anatomical.nii").read_bytes(), "3d", None),
    "example4d": ("example4d.nii.gz", lambda: (NIBABEL_FILES / "example4d.nii.gz").read_bytes(), "3d", None),
    "series_zip": ("series.zip", _dicom_series_zip, "3d", (128, 128, 5)),
}


def _outputs(c, job):  # type: ignore[no-untyped-def]
    (task,) = job["task_results"]
    assert task["status"] == "SUCCESS", task["error"]
    return task, {o["role"]: o for o in task["result"]["outputs"]}


def _open_volume(data: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


@pytest.mark.parametrize("kind", list(INPUTS))
@pytest.mark.parametrize("op", ["blur", "resize", "grayscale", "threshold"])
def test_every_input_kind_through_every_seed_operation(platform, kind: str, op: str) -> None:
    name, make, dim, shape = INPUTS[kind]
    with client(platform, "inputs") as c:
        r = submit(c, [(name, make())], op)
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"])
        assert job["status"] == "SUCCESS", [t["error"] for t in job["task_results"]]
        task, outs = _outputs(c, job)
        meta = task["result"]["metadata"]
        primary = download(c, outs["primary"]["url"])
        if dim == "2d":
            assert outs["primary"]["media_type"] == "image/png"
            img = np.asarray(Image.open(io.BytesIO(primary)))
            expected = (512, 512) if op == "resize" else shape
            assert img.shape[:2] == expected
            if op == "grayscale":
                assert img.ndim == 2
            if op == "threshold":
                assert img.ndim == 2 and set(np.unique(img)) <= {0, 255}
        else:
            assert outs["primary"]["filename"].endswith(".nii.gz")
            vol = _open_volume(primary)
            assert "preview" in outs
            if op == "threshold":
                assert vol.get_data_dtype() == np.uint8 and set(np.unique(vol.dataobj)) <= {0, 1}
            assert Image.open(io.BytesIO(download(c, outs["preview"]["url"]))).format == "PNG"
            if kind in ("anatomical", "example4d"):
                src = nib.load(NIBABEL_FILES / name)
                if op != "resize":
                    assert vol.shape == src.shape
                    np.testing.assert_allclose(vol.affine, src.affine, atol=1e-4)
                else:
                    assert vol.shape[3:] == src.shape[3:]
                    # Resampling keeps the world extent of the volume.
                    extent_src = np.abs(src.affine[:3, :3] @ np.array(src.shape[:3]))
                    extent_out = np.abs(vol.affine[:3, :3] @ np.array(vol.shape[:3]))
                    np.testing.assert_allclose(extent_out, extent_src, rtol=0.1)
            elif op != "resize":
                assert sorted(vol.shape[:3]) == sorted(shape)
        assert meta.get("format") in {"png", "jpeg", "dicom", "nifti", "zip"}


def test_blur_really_blurs_a_2d_image(platform) -> None:
    original = png_bytes((128, 128))
    with client(platform, "inputs") as c:
        job = wait_job(c, submit(c, [("b.png", original)], "blur", {"sigma": 2.0}).json()["job_id"])
        _, outs = _outputs(c, job)
        out = np.asarray(Image.open(io.BytesIO(download(c, outs["primary"]["url"])))).astype(float)
    src = np.asarray(Image.open(io.BytesIO(original))).astype(float)
    # Same brightness overall, much less pixel-to-pixel variation (noise and edges smoothed).
    assert abs(out.mean() - src.mean()) < 3
    assert np.abs(np.diff(out, axis=1)).mean() < 0.4 * np.abs(np.diff(src, axis=1)).mean()


def test_blur_of_a_volume_is_really_3d(platform) -> None:
    src = nib.load(NIBABEL_FILES / "anatomical.nii")
    with client(platform, "inputs") as c:
        r = submit(c, [("anatomical.nii", (NIBABEL_FILES / "anatomical.nii").read_bytes())], "blur",
                   {"sigma": 3.0})
        job = wait_job(c, r.json()["job_id"])
        _, outs = _outputs(c, job)
        vol = _open_volume(download(c, outs["primary"]["url"]))
    a = src.get_fdata()
    b = vol.get_fdata()
    assert b.shape == a.shape
    assert not np.allclose(a, b)
    # Smoothing along every axis, the slice direction included (the seed only copied volumes).
    for axis in range(3):
        assert np.abs(np.diff(b, axis=axis)).mean() < 0.7 * np.abs(np.diff(a, axis=axis)).mean()
    assert abs(b.mean() - a.mean()) < 0.05 * abs(a.mean()) + 1


@pytest.mark.parametrize("name", ["volume", "volume.dat", "volume.png", "scan.dcm"])
def test_format_comes_from_content_not_the_name(platform, name: str) -> None:
    data = (NIBABEL_FILES / "example4d.nii.gz").read_bytes()
    with client(platform, "inputs") as c:
        job = wait_job(c, submit(c, [(name, data)], "blur").json()["job_id"])
    (task,) = job["task_results"]
    assert task["status"] == "SUCCESS", task["error"]
    assert task["result"]["metadata"]["format"] == "nifti"
    assert task["result"]["outputs"][0]["filename"].endswith(".nii.gz")


def test_dicom_input_comes_back_as_a_viewable_png(platform) -> None:
    """A browser cannot show DICOM: the task also returns the unprocessed input as a PNG (role
    "input") on the grey scale of the result, for the web UI's before/after slider."""
    with client(platform, "inputs") as c:
        data = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
        job = wait_job(c, submit(c, [("CT_small.dcm", data)], "blur", {"sigma": 0.01}).json()["job_id"])
        task, outs = _outputs(c, job)
        assert task["result"]["outputs"][0]["role"] == "primary"
        assert outs["input"]["filename"] == "CT_small_input.png"
        assert outs["input"]["media_type"] == "image/png" and "token=" in outs["input"]["url"]
        before = Image.open(io.BytesIO(download(c, outs["input"]["url"])))
        after = Image.open(io.BytesIO(download(c, outs["primary"]["url"])))
    assert before.format == "PNG" and before.mode == after.mode == "L"
    assert before.size == after.size == (128, 128)
    # A blur this small changes nothing visible: the same window gives the same picture.
    diff = np.abs(np.asarray(before).astype(int) - np.asarray(after).astype(int))
    assert diff.max() <= 1 and np.asarray(before).std() > 5


def test_dicom_series_input_comes_back_as_a_volume_on_the_result_grid(platform) -> None:
    with client(platform, "inputs") as c:
        job = wait_job(c, submit(c, [("series.zip", _dicom_series_zip())], "blur").json()["job_id"])
        _, outs = _outputs(c, job)
        assert outs["input"]["filename"] == "series_input.nii.gz"
        source = _open_volume(download(c, outs["input"]["url"]))
        result = _open_volume(download(c, outs["primary"]["url"]))
    assert source.shape == result.shape and sorted(source.shape) == [5, 128, 128]
    np.testing.assert_allclose(source.affine, result.affine, atol=1e-6)
    assert np.asanyarray(source.dataobj).min() < 0  # real units (HU), not display values


@pytest.mark.parametrize("kind", ["png", "jpeg", "anatomical"])
def test_viewable_inputs_come_back_without_an_input_copy(platform, kind: str) -> None:
    name, make, _, _ = INPUTS[kind]
    with client(platform, "inputs") as c:
        job = wait_job(c, submit(c, [(name, make())], "grayscale").json()["job_id"])
        _, outs = _outputs(c, job)
    assert "input" not in outs
