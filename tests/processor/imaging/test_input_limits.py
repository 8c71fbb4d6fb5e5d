"""Inputs that claim more pixels than accepted, and malformed headers: refused from the header,
before decoding, with a message for users."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.uid import DeflatedExplicitVRLittleEndian

from services.processor import imaging, operations
from services.processor.imaging import ImagingError, limits, loader
from tests.processor.imaging.helpers import ct_slice, dicom_file

ROOT = Path(__file__).resolve().parents[3]

# -- small files that claim to be huge -------------------------------------------------------------


def _png_claiming(width: int, height: int, colour_type: int = 0) -> bytes:
    """A PNG header of width x height with a few bytes of image data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(1000)))
        + chunk(b"IEND", b"")
    )


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) says width x height."""
    buf = io.BytesIO()
    PILImage.new("RGB", (16, 16)).save(buf, format="JPEG")
    raw = bytearray(buf.getvalue())
    sof = raw.index(b"\xff\xc0")
    struct.pack_into(">HH", raw, sof + 5, height, width)
    return bytes(raw)


def _dicom(rows: int, columns: int, frames: int = 1, pixels: bytes = b"", deflate: bool = False) -> bytes:
    """A CT data set whose header says rows x columns (x frames), with the given pixel bytes."""
    ds = pydicom.dcmread(io.BytesIO(ct_slice(np.zeros((2, 2), np.uint16), series_uid="1.2", position=None)))
    ds.Rows, ds.Columns = rows, columns
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels
    if deflate:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _nifti(shape: tuple[int, ...], data: bytes = bytes(1000), vox_offset: float = 352.0) -> bytes:
    """A NIfTI-1 uint8 header of the given shape followed by ``data``."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, len(shape), *shape, *([1] * (7 - len(shape))))
    struct.pack_into("<hh", header, 70, 2, 8)  # uint8
    struct.pack_into("<8f", header, 76, *([1.0] * 8))
    struct.pack_into("<ff", header, 108, vox_offset, 1.0)
    header[344:348] = b"n+1\x00"
    return bytes(header) + bytes(4) + data


def _nifti2(shape: tuple[int, ...]) -> bytes:
    """A NIfTI-2 uint8 header (whose dimensions may exceed 32767) followed by a little data."""
    header = nib.Nifti2Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 544
    return header.binaryblock + bytes(4) + bytes(1000)


def _series_zip(slices: int, rows: int, columns: int) -> bytes:
    """A ZIP of slice headers of rows x columns each, with no real pixel data."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for k in range(slices):
            ds = pydicom.dcmread(
                io.BytesIO(ct_slice(np.zeros((2, 2), np.uint16), series_uid="1.2", position=(0, 0, k)))
            )
            ds.Rows, ds.Columns, ds.PixelData = rows, columns, b"\x00\x00"
            member = io.BytesIO()
            ds.save_as(member, enforce_file_format=True)
            zf.writestr(f"s/{k}.dcm", member.getvalue())
    return buf.getvalue()


OVERSIZED = {
    "big.png": (  # under Pillow's own decompression bomb limit (89 M pixels)
        _png_claiming(9000, 9000, colour_type=6),
        r"^PNG image is 9000 x 9000 pixels; at most 8192 x 8192 are accepted$",
    ),
    "big.jpg": (_jpeg_claiming(9000, 100), r"^JPEG image is 9000 x 100 pixels; at most 8192 x 8192"),
    "big.dcm": (_dicom(16000, 16000), r"^DICOM image is 16000 x 16000 pixels; at most 8192 x 8192"),
    "frames.dcm": (
        _dicom(512, 512, frames=2000),
        r"^DICOM image is 512 x 512 x 2000 voxels \(524,288,000 values\); at most 268,435,456 "
        r"\(512 x 512 x 1024\) are accepted$",
    ),
    "deflated.dcm": (
        _dicom(4000, 4000, pixels=bytes(32_000_000), deflate=True),
        r"^Deflated DICOM data set has a suspicious compression ratio",
    ),
    "big.nii": (_nifti((1024, 1024, 1024)), r"^NIfTI image is 1024 x 1024 x 1024 voxels"),
    "long.nii": (_nifti2((2, 2, 40000)), r"at most 32767 are accepted along each axis$"),
    "series.zip": (_series_zip(300, 1000, 1000), r"^DICOM series is 1000 x 1000 x 300 voxels"),
}


@pytest.fixture(scope="module")
def oversized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("oversized")
    paths = {}
    for name, (data, _) in OVERSIZED.items():
        paths[name] = d / name
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize("name", sorted(OVERSIZED))
def test_oversized_inputs_are_refused_from_their_headers(name: str, oversized: dict[str, Path]) -> None:
    path = oversized[name]
    assert path.stat().st_size < 200_000  # small files claiming hundreds of megabytes
    with pytest.raises(ImagingError, match=OVERSIZED[name][1]):
        imaging.load(path)
    with pytest.raises(ImagingError, match=OVERSIZED[name][1]):
        imaging.inspect(path)


def test_oversized_inputs_allocate_nothing_large(oversized: dict[str, Path]) -> None:
    """All of them in one fresh process: its peak memory stays far below any one decoded image."""
    script = (
        "import json, resource, sys\n"
        "from services.processor import imaging\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "errors = []\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        imaging.load(path)\n"
        "    except imaging.ImagingError as exc:\n"
        "        errors.append(str(exc))\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'errors': errors, 'grown_mib': (peak - base) / 1024}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, oversized.values())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(done.stdout.splitlines()[-1])
    assert len(report["errors"]) == len(oversized)
    assert report["grown_mib"] < 100, report  # PNG, DICOM, NIfTI and ZIP claim 300 MiB to 1 GiB


def test_limits_are_one_set_of_constants() -> None:
    assert limits.MAX_IMAGE_PIXELS == operations.MAX_OUTPUT_PIXELS == 8192 * 8192
    assert limits.MAX_VOLUME_VOXELS == operations.MAX_OUTPUT_VOXELS == 512 * 512 * 1024


def test_inputs_at_the_limits_are_accepted() -> None:
    limits.check_image_size("PNG image", 8192, 8192)
    limits.check_volume_size("NIfTI image", (512, 512, 1024))
    limits.check_volume_size("NIfTI image", (512, 512, 512, 2))
    with pytest.raises(ImagingError, match=r"x 3 samples"):
        limits.check_volume_size("NIfTI image", (512, 512, 1024), samples=3)
    assert imaging.load(dicom_file("image_dfl.dcm")).data.shape == (512, 512)  # deflated, ratio ~100


# -- malformed headers -----------------------------------------------------------------------------


MALFORMED = {
    "rows0.dcm": (_dicom(0, 0), r"^DICOM image has no pixels: its size is 0 x 0$"),
    "neg_dim.nii": (_nifti((-5, 10, 10)), r"^NIfTI image has an empty or negative dimension: .* -5 x 10"),
    "zero_dim.nii": (_nifti((0, 10, 10)), r"^NIfTI image has an empty or negative dimension"),
    "voxoff.nii": (_nifti((10, 10, 10), vox_offset=1e30), r"^NIfTI header is corrupt: its voxel data offset"),
    "cut.nii": (_nifti((100, 100, 100)), r"^NIfTI file is truncated: its header needs 1000352 bytes"),
    "7d.nii": (_nifti((2, 2, 2, 2, 2, 2, 2)), r"^NIfTI image has 7 dimensions; 2 to 5 are supported$"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_headers_are_clear_imaging_errors(name: str, tmp_path: Path) -> None:
    data, message = MALFORMED[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImagingError, match=message):
        operations.run("blur", {}, str(path), str(tmp_path), "out")
    with pytest.raises(ImagingError, match=message):
        imaging.inspect(path)


def test_dicom_with_bits_allocated_zero(tmp_path: Path) -> None:
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds.BitsAllocated = 0
    path = tmp_path / "bits0.dcm"
    ds.save_as(path)
    with pytest.raises(ImagingError, match=r"^DICOM Bits Allocated of 0 is not supported$"):
        imaging.load(path)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_non_finite_dicom_geometry_is_ignored(tmp_path: Path) -> None:
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds["PixelSpacing"].value = ["nan", "inf"]
    path = tmp_path / "nan.dcm"
    ds.save_as(path)
    assert imaging.load(path).spacing is None


def test_nifti_with_a_non_finite_affine(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4))
    img.header["srow_x"] = [np.nan, 0, 0, 0]
    img.header["sform_code"] = 1
    path = tmp_path / "nan.nii"
    nib.save(img, path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<f", raw, 280, float("nan"))  # srow_x[0], after nibabel's own sanitising
    path.write_bytes(bytes(raw))
    with pytest.raises(ImagingError, match="affine is not finite"):
        imaging.load(path)


# -- any reader's unexpected exception is the file's fault -----------------------------------------


def test_unexpected_reader_exceptions_become_imaging_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "scan.dcm"
    path.write_bytes(dicom_file("CT_small.dcm").read_bytes())

    def broken(p: Path) -> None:
        raise OverflowError(f"cannot map {p}")

    monkeypatch.setitem(loader._READERS, "dicom", broken)
    with pytest.raises(ImagingError, match=r"^DICOM file could not be read: cannot map the file$"):
        imaging.load(path)
    monkeypatch.setattr(loader.io_dicom, "inspect_dicom", broken)
    with pytest.raises(ImagingError, match=r"^DICOM file could not be read: cannot map the file$"):
        imaging.inspect(path)

    def exhausted(p: Path) -> None:
        raise MemoryError

    monkeypatch.setitem(loader._READERS, "dicom", exhausted)
    with pytest.raises(MemoryError):  # not the file's fault
        imaging.load(path)


def test_bugs_in_operations_are_not_blamed_on_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def buggy(image: imaging.Image, params: dict) -> imaging.Image:
        raise TypeError("a bug")

    blur = operations._REGISTRY["blur"]
    monkeypatch.setitem(operations._REGISTRY, "blur", blur.__class__(**{**blur.__dict__, "apply": buggy}))
    with pytest.raises(TypeError, match="a bug"):
        operations.run("blur", {}, str(dicom_file("CT_small.dcm")), str(tmp_path), "out")
