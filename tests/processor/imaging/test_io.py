"""Reading real files: pydicom's and nibabel's samples, synthetic series, and junk."""

from __future__ import annotations

import gzip
import io
import random
import re
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.pixels import apply_modality_lut

from services.common import sniff
from services.processor import imaging
from services.processor.imaging import ImagingError, outputs
from tests.processor.imaging.helpers import NIBABEL_DATA, ct_slice, dicom_file

# -- DICOM -----------------------------------------------------------------------------------------


def test_ct_small_is_in_hounsfield_units() -> None:
    image = imaging.load(dicom_file("CT_small.dcm"))
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    expected = apply_modality_lut(ds.pixel_array, ds)
    assert image.kind == "2d" and image.data.shape == (128, 128)
    assert np.array_equal(image.data, expected)
    assert image.data.min() < -800  # air is negative: the intercept was applied
    assert image.metadata["modality"] == "CT" and image.metadata["units"] == "HU"
    assert image.spacing == pytest.approx((0.661468, 0.661468))


def test_mr_small_keeps_its_window() -> None:
    image = imaging.load(dicom_file("MR_small.dcm"))
    assert image.data.shape == (64, 64)
    assert image.display.window == (600.0, 1600.0) and not image.display.invert
    grey, samples = outputs.display_array(image)
    assert samples == "L" and grey.dtype == np.uint8


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_lossless_compressed_equals_uncompressed(name: str) -> None:
    reference = imaging.load(dicom_file("MR_small.dcm"))
    compressed = imaging.load(dicom_file(name))
    assert compressed.metadata["transfer_syntax"] != reference.metadata["transfer_syntax"]
    assert np.array_equal(compressed.data, reference.data)


def test_jpeg2000_decodes() -> None:
    image = imaging.load(dicom_file("JPEG2000.dcm"))
    assert image.kind == "2d" and image.data.shape == (1024, 256)
    assert image.data.std() > 0


def test_rtdose_multiframe_is_a_volume_in_gray() -> None:
    ds = pydicom.dcmread(dicom_file("rtdose.dcm"))
    image = imaging.load(dicom_file("rtdose.dcm"))
    assert image.kind == "volume" and image.data.shape == (10, 10, 15)
    dose = ds.pixel_array * float(ds.DoseGridScaling)
    assert np.allclose(image.data[:, :, 3], dose[3].T, rtol=1e-6)  # frames along z, (column, row)
    # LPS origin (189.43, 199.43, -761.87) -> RAS (-189.43, -199.43, -761.87); 5 mm between frames
    assert np.allclose(image.affine[:3, 3], [-189.43125, -199.43125, -761.87])
    assert np.allclose(np.diag(image.affine)[:3], [-10.0, -10.0, 5.0])
    assert image.metadata["units"] == ds.DoseUnits


def test_rgb_multiframe_without_positions_is_a_colour_time_series() -> None:
    image = imaging.load(dicom_file("SC_rgb_rle_2frame.dcm"))
    raw = pydicom.dcmread(dicom_file("SC_rgb_rle_2frame.dcm")).pixel_array
    assert image.kind == "2d" and image.frames is not None  # no geometry says the frames are space
    assert image.samples == "RGB" and image.data.shape == (100, 100, 2, 3)
    assert np.array_equal(image.data[:, :, 1, :], raw[1])
    preview, samples = outputs.preview_array(image)
    assert samples == "RGB" and preview.shape == (100, 100, 3)
    assert np.array_equal(preview, raw[1])  # the preview shows the middle frame as DICOM viewers do


def test_monochrome1_dicom_is_inverted(tmp_path: Path) -> None:
    pixels = np.tile(np.arange(0, 1000, 10, dtype=np.uint16), (4, 1))
    path = tmp_path / "m1.dcm"
    path.write_bytes(
        ct_slice(pixels, series_uid="1.2", position=None, photometric="MONOCHROME1", intercept=0)
    )
    image = imaging.load(path)
    assert image.display.invert
    grey, _ = outputs.display_array(image)
    assert grey[0, 0] == 255 and grey[0, -1] == 0  # low values white, high values black


def test_truncated_dicom_pixel_data() -> None:
    with pytest.raises(
        ImagingError, match=r"^DICOM pixel data is truncated: expected 8192 bytes, found 8130$"
    ):
        imaging.load(dicom_file("MR_truncated.dcm"))


def test_dicom_cut_in_half(tmp_path: Path) -> None:
    raw = dicom_file("CT_small.dcm").read_bytes()
    half = tmp_path / "half.dcm"
    half.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImagingError, match=r"DICOM pixel data is truncated: expected 32768 bytes, found \d+"):
        imaging.load(half)
    head = tmp_path / "head.dcm"
    head.write_bytes(raw[:3000])
    with pytest.raises(ImagingError, match="no pixel data: the file is probably truncated"):
        imaging.load(head)
    with pytest.raises(ImagingError, match="truncated"):
        imaging.inspect(half)


def test_dicom_without_pixels() -> None:
    with pytest.raises(ImagingError, match="no pixel data .*not an image"):
        imaging.load(dicom_file("rtplan.dcm"))


def test_inspect_dicom() -> None:
    fmt, meta = imaging.inspect(dicom_file("CT_small.dcm"))
    assert fmt == "dicom"
    assert meta["modality"] == "CT" and meta["shape"] == [128, 128] and meta["kind"] == "2d"
    fmt, meta = imaging.inspect(dicom_file("rtdose.dcm"))
    assert meta["kind"] == "volume" and meta["shape"] == [10, 10, 15]


# -- DICOM series in a ZIP -------------------------------------------------------------------------


def _oblique_series(n: int, spacing: float) -> tuple[list[tuple[str, bytes]], dict]:
    """Slices of an oblique series (tilted 20 degrees about x); slice k has stored value 1000 + k."""
    angle = np.deg2rad(20)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(angle), -np.sin(angle)])
    normal = np.cross(row, col)
    origin = np.array([-120.0, -80.0, 40.0])
    uid = "1.2.826.0.1.3680043.2.1125.1"
    members = []
    for k in range(n):
        pixels = np.full((6, 5), 1000 + k, np.uint16)
        pixels[0, 0] = 3000  # mark row 0, column 0
        position = origin + k * spacing * normal
        data = ct_slice(
            pixels,
            series_uid=uid,
            position=tuple(position),
            orientation=(*row, *col),
            pixel_spacing=(0.8, 0.6),
            instance=n - k,
        )  # instance numbers run backwards
        members.append((f"series/IM{k:04d}.dcm", data))
    return members, {"row": row, "col": col, "normal": normal, "origin": origin}


def _zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def test_series_zip_sorts_slices_and_builds_the_affine(tmp_path: Path) -> None:
    members, geo = _oblique_series(7, spacing=2.5)
    other = [
        (f"other/{k}.dcm", ct_slice(np.zeros((6, 5), np.uint16), series_uid="9.9", position=(0, 0, k)))
        for k in range(2)
    ]
    junk = [("README.txt", b"not dicom"), ("__MACOSX/._IM0000.dcm", b"\x00\x05\x16\x07"), ("DICOMDIR", b"x")]
    shuffled = members + other + junk
    random.Random(7).shuffle(shuffled)
    path = _zip(tmp_path / "series.zip", shuffled)

    image = imaging.load(path)
    assert image.kind == "volume" and image.data.shape == (5, 6, 7)
    # sorted along the normal: slice k holds 1000 + k stored, i.e. -24 + k HU
    assert [int(image.data[2, 3, k]) for k in range(7)] == [-24 + k for k in range(7)]
    assert image.data[0, 0, 0] == 3000 - 1024
    assert image.data.dtype == np.int16
    # the affine: voxel (column i, row j, slice k) -> LPS origin + i*0.6*row + j*0.8*col + k*2.5*normal
    for i, j, k in [(0, 0, 0), (4, 0, 0), (0, 5, 0), (3, 2, 6)]:
        lps = geo["origin"] + i * 0.6 * geo["row"] + j * 0.8 * geo["col"] + k * 2.5 * geo["normal"]
        ras = image.affine @ [i, j, k, 1]
        assert np.allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-3)
    assert image.spacing == pytest.approx((0.6, 0.8, 2.5), abs=1e-4)
    assert image.metadata["series_count"] == 2 and image.metadata["slices"] == 7
    assert image.metadata["other_series"] == [
        {"series_instance_uid": "9.9", "modality": "CT", "series_description": "synthetic", "slices": 2}
    ]
    assert image.metadata["skipped_files"] == 1  # README.txt; folders, __MACOSX and DICOMDIR ignored

    fmt, meta = imaging.inspect(path)
    assert fmt == "zip" and meta["slices"] == 7 and meta["kind"] == "volume"


def test_single_slice_series_is_2d(tmp_path: Path) -> None:
    members, _ = _oblique_series(1, spacing=2.5)
    image = imaging.load(_zip(tmp_path / "one.zip", members))
    assert image.kind == "2d" and image.data.shape == (6, 5)


def test_series_with_duplicate_positions_is_refused(tmp_path: Path) -> None:
    members, _ = _oblique_series(3, spacing=2.5)
    members.append(("dup.dcm", members[1][1]))
    with pytest.raises(ImagingError, match="share one position"):
        imaging.load(_zip(tmp_path / "dup.zip", members))


def test_zip_of_text_files(tmp_path: Path) -> None:
    path = _zip(tmp_path / "text.zip", [("a.txt", b"hello"), ("b.txt", b"world")])
    with pytest.raises(ImagingError, match=r"^ZIP contains no DICOM images \(2 file\(s\) checked\)$"):
        imaging.load(path)


def test_zip_bomb_is_refused(tmp_path: Path) -> None:
    members, _ = _oblique_series(2, spacing=2.5)
    path = _zip(tmp_path / "bomb.zip", [*members, ("zeros.dcm", bytes(8 * 1024**2))])
    with pytest.raises(ImagingError, match="suspicious compression ratio"):
        imaging.load(path)


def test_corrupt_zip(tmp_path: Path) -> None:
    members, _ = _oblique_series(2, spacing=2.5)
    raw = _zip(tmp_path / "ok.zip", members).read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImagingError, match="ZIP file is corrupt"):
        imaging.load(cut)


# -- NIfTI -----------------------------------------------------------------------------------------


def test_anatomical_nifti() -> None:
    source = nib.load(NIBABEL_DATA / "anatomical.nii")
    image = imaging.load(NIBABEL_DATA / "anatomical.nii")
    assert image.kind == "volume" and image.data.shape == (33, 41, 25)
    assert np.array_equal(image.affine, source.affine)
    assert np.array_equal(image.data, np.asanyarray(source.dataobj))
    assert image.metadata["qform_code"] == 2 and image.metadata["sform_code"] == 2


def test_nifti_scaling_gives_real_values(tmp_path: Path) -> None:
    stored = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(stored, np.diag([1.5, 1.5, 3.0, 1.0]))
    img.header.set_slope_inter(0.5, -10.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    image = imaging.load(tmp_path / "scaled.nii.gz")
    assert image.data.dtype == np.float32
    assert np.allclose(image.data, stored * 0.5 - 10.0)
    assert image.spacing == (1.5, 1.5, 3.0)


def test_nifti2_and_4d() -> None:
    image = imaging.load(NIBABEL_DATA / "example4d.nii.gz")
    assert image.data.shape == (128, 96, 24, 2)
    assert np.allclose(image.affine, nib.load(NIBABEL_DATA / "example4d.nii.gz").affine)


def test_nifti2_is_read(tmp_path: Path) -> None:
    img = nib.Nifti2Image(np.ones((4, 5, 6), np.float32), np.eye(4))
    nib.save(img, tmp_path / "v2.nii")
    image = imaging.load(tmp_path / "v2.nii")
    assert image.metadata["nifti_version"] == 2 and image.data.shape == (4, 5, 6)


def test_truncated_nifti_gz(tmp_path: Path) -> None:
    raw = (NIBABEL_DATA / "example4d.nii.gz").read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImagingError, match="NIfTI file is truncated or corrupt"):
        imaging.load(path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 200)
    with pytest.raises(ImagingError, match="gzip file is corrupt"):
        imaging.load(path)
    gz_text = tmp_path / "text.gz"
    gz_text.write_bytes(gzip.compress(b"just some text" * 100))
    with pytest.raises(ImagingError, match="gzip file is corrupt or does not hold a NIfTI image"):
        imaging.load(gz_text)


# -- PNG / JPEG ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "samples", "dtype"),
    [
        ("L", "L", np.uint8),
        ("LA", "LA", np.uint8),
        ("RGB", "RGB", np.uint8),
        ("RGBA", "RGBA", np.uint8),
        ("I;16", "L", np.uint16),
        ("P", "RGB", np.uint8),
    ],
)
def test_png_modes(tmp_path: Path, mode: str, samples: str, dtype: type) -> None:
    pil = PILImage.new("RGB", (20, 10), (10, 200, 30)).convert(mode)
    path = tmp_path / "x.png"
    pil.save(path)
    image = imaging.load(path)
    assert image.samples == samples and image.data.dtype == dtype
    assert image.data.shape[:2] == (10, 20) and image.display.native


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    pil = PILImage.new("RGB", (40, 20), (200, 100, 50))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotated: display 90 degrees clockwise
    path = tmp_path / "rot.jpg"
    pil.save(path, exif=exif.tobytes())
    image = imaging.load(path)
    assert image.data.shape == (40, 20, 3)


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    PILImage.new("L", (64, 64)).save(path)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImagingError, match="too large"):
        imaging.load(path)


def test_truncated_png(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(noise).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImagingError, match="^PNG file is truncated or corrupt: "):
        imaging.load(path)


def test_empty_and_text_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImagingError, match="^The file is empty$"):
        imaging.load(empty)
    text = tmp_path / "text.png"
    text.write_text("hello, this is not an image\n" * 10)
    # The processor names what is accepted in the gateway's words (services/common/sniff.py).
    with pytest.raises(ImagingError, match=f"^Unsupported file type: expected {re.escape(sniff.ACCEPTED)}$"):
        imaging.inspect(text)


def test_inspect_png(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    PILImage.new("RGB", (30, 20)).save(path)
    assert imaging.inspect(path) == (
        "png",
        {"format": "png", "kind": "2d", "source_mode": "RGB", "shape": [20, 30], "width": 30, "height": 20},
    )


@pytest.mark.parametrize(
    "name",
    ["emri_small.dcm", "rtdose.dcm", "examples_ybr_color.dcm", "SC_rgb_rle_2frame.dcm", "CT_small.dcm"],
)
def test_inspect_tells_the_kind_load_gives_for_a_file_and_a_zip_of_it(name: str, tmp_path: Path) -> None:
    """The gateway refuses a kind an operation does not take from Inspect alone: its kind must be
    the one the file decodes to, a multi-frame volume alone in a ZIP included (frames in time stay
    2D)."""
    zip_path = tmp_path / "one.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.write(dicom_file(name), "a.dcm")
    for path in (dicom_file(name), zip_path):
        image = imaging.load(path)
        assert imaging.inspect(path)[1]["kind"] == ("2d" if image.kind == "2d" else "volume"), path
