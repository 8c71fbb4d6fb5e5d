"""Test inputs: paths of pydicom's and nibabel's sample files, and synthetic DICOM slices."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from nibabel.testing import data_path as _nib_data
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

NIBABEL_DATA = Path(_nib_data)


def dicom_file(name: str) -> Path:
    return Path(get_testdata_file(name))


def ct_slice(
    pixels: np.ndarray,
    *,
    series_uid: str,
    position: tuple[float, float, float] | None,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    pixel_spacing: tuple[float, float] = (0.8, 0.6),
    instance: int = 1,
    intercept: float = -1024.0,
    slope: float = 1.0,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
) -> bytes:
    """A CT slice as DICOM Part 10 bytes; ``pixels`` are stored values (uint16)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.InstanceNumber = instance
    ds.SeriesDescription = "synthetic"
    if position is not None:
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PixelSpacing = [str(v) for v in pixel_spacing]
    ds.SliceThickness = "2.5"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = str(intercept)
    ds.RescaleSlope = str(slope)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = str(window[0]), str(window[1])
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def high_frequency_energy(data: np.ndarray, spatial_axes: int) -> float:
    """Mean squared first difference along the spatial axes: falls when an image is blurred."""
    values = data.astype(np.float64)
    return float(sum(np.mean(np.diff(values, axis=a) ** 2) for a in range(spatial_axes)))
