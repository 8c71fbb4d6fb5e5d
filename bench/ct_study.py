"""A synthetic CT study for the 3D benchmark: a ZIP of single-frame DICOM slices (512x512, 12 bits
stored in 16, rescale intercept -1024), a body-like ellipse with noise and a bone-like disc whose
size changes along the series, so that the volume looks like CT to the decoder, the blur and the
gzip of the NIfTI writer (noise does not compress away). Deterministic for a given seed.

    .venv/bin/python bench/ct_study.py out.zip [--slices 200] [--size 512]
"""

from __future__ import annotations

import argparse
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

ROOT_UID = "1.2.826.0.1.3680043.10.999."  # fixed UIDs: the same study every time


def _slices(size: int, count: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    body = ((x - size / 2) / (0.42 * size)) ** 2 + ((y - size / 2) / (0.34 * size)) ** 2 <= 1
    soft = np.where(body, 1024 + 40, 0).astype(np.int32)  # stored value = HU + 1024
    for k in range(count):
        radius = 0.08 * size * (1 + 0.5 * np.sin(k / count * np.pi))
        bone = (x - size / 2) ** 2 + (y - 0.6 * size) ** 2 <= radius * radius
        noise = np.where(body, rng.normal(0, 15, (size, size)), 0).astype(np.int32)
        yield np.clip(soft + np.where(bone, 700, 0) + noise, 0, 4095).astype("<u2")


def study_zip(slices: int = 200, size: int = 512, seed: int = 0) -> bytes:
    """The study as ZIP bytes (stored, not deflated: DICOM uploads usually are)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for k, pixels in enumerate(_slices(size, slices, seed)):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = f"{ROOT_UID}3.{k + 1}"
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            ds.Modality = "CT"
            ds.StudyInstanceUID = f"{ROOT_UID}1"
            ds.SeriesInstanceUID = f"{ROOT_UID}2"
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = ["-200", "-200", f"{-k * 1.25:.2f}"]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.PixelSpacing = ["0.78125", "0.78125"]
            ds.SliceThickness = "1.25"
            ds.Rows = ds.Columns = size
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
            ds.WindowCenter, ds.WindowWidth = "40", "400"
            ds.PixelData = pixels.tobytes()
            part = io.BytesIO()
            ds.save_as(part, enforce_file_format=True)
            archive.writestr(f"CT{k + 1:04d}.dcm", part.getvalue())
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    args.out.write_bytes(study_zip(args.slices, args.size))


if __name__ == "__main__":
    main()
