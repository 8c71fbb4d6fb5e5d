"""Format sniffing on bytes: what the gateway accepts and the processor reads."""

from __future__ import annotations

import gzip
import io
import zipfile

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from services.common import sniff as s

DICOM = open(get_testdata_file("CT_small.dcm"), "rb").read()  # noqa: SIM115 - read once at import


def _nifti() -> bytes:
    return nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)).to_bytes()


def _zip(
    members: list[tuple[str, bytes]], *, method: int = zipfile.ZIP_DEFLATED, streamed: bool = False
) -> bytes:
    class _Unseekable(io.RawIOBase):  # zipfile then writes sizes after each member's data
        def __init__(self) -> None:
            self.buf = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[no-untyped-def]
            self.buf += b
            return len(b)

    out: io.BytesIO | _Unseekable = _Unseekable() if streamed else io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as z:  # type: ignore[arg-type]
        for name, data in members:
            z.writestr(name, data)
    return bytes(out.buf) if isinstance(out, _Unseekable) else out.getvalue()


def test_each_format_by_content() -> None:
    from PIL import Image

    png, jpg = io.BytesIO(), io.BytesIO()
    Image.new("L", (4, 4)).save(png, "PNG")
    Image.new("L", (4, 4)).save(jpg, "JPEG")
    assert s.sniff(png.getvalue()) == s.PNG
    assert s.sniff(jpg.getvalue()) == s.JPEG
    assert s.sniff(DICOM) == s.DICOM
    assert s.sniff(_nifti()) == s.NIFTI
    assert s.sniff(gzip.compress(_nifti())) == s.NIFTI
    assert s.suffix_for(gzip.compress(_nifti())) == ".nii.gz"


def test_bare_dicom_data_set_without_preamble() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, True
    write_dataset(out, ds)  # no preamble, no "DICM", no group 0002: the data set alone
    bare = out.getvalue()
    assert bare[128:132] != b"DICM"
    assert s.sniff(bare) == s.DICOM


@pytest.mark.parametrize("junk", [
    b"", b"hello world" * 10, b"\x1f\x8b" + b"\x00" * 40, b"PK\x03\x04" + b"\x00" * 10,
    gzip.compress(b"not a nifti" * 100),
])
def test_junk_is_nothing_we_accept(junk: bytes) -> None:
    assert s.sniff(junk) is None


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_series_zip_with_other_files_before_the_slices(method: int, streamed: bool) -> None:
    """Exports put a README, a DICOMDIR, folders or macOS metadata before the slices."""
    members = [
        ("series/", b""),
        ("__MACOSX/._IM0001", b"\x00\x05\x16\x07" + b"\x00" * 60),
        ("series/README.txt", b"Exported by a scanner workstation.\n" * 20),
        ("series/DICOMDIR", DICOM[:400]),
        ("series/IM0001", DICOM),
        ("series/IM0002", DICOM),
    ]
    data = _zip(members, method=method, streamed=streamed)
    assert s.sniff(data[: s.SNIFF_BYTES]) == s.ZIP


def test_zip_without_dicom_is_refused() -> None:
    data = _zip([("notes.txt", b"text " * 500), ("photo.bin", bytes(range(256)) * 10)])
    assert s.sniff(data) is None


def test_dicom_beyond_the_sniffed_bytes_is_not_assumed() -> None:
    """Only what was read counts: a ZIP whose first DICOM member starts after the sniffed head is
    refused rather than trusted."""
    filler = np.random.default_rng(0).integers(0, 256, 2 * s.SNIFF_BYTES, dtype=np.uint8).tobytes()
    data = _zip([("big.bin", filler), ("IM0001", DICOM)], method=zipfile.ZIP_STORED)
    assert s.sniff(data[: s.SNIFF_BYTES]) is None
