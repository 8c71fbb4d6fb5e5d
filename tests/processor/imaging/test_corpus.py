"""pydicom's whole test corpus (its own files and pydicom-data's): every file that pydicom decodes
decodes here to pydicom's exact values; every other file is refused with an ImagingError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.pixels import apply_color_lut, apply_modality_lut

from services.processor import imaging
from services.processor.imaging import ImagingError

CORPUS = sorted(Path(p) for p in get_testdata_files() if Path(p).is_file())


def _enhanced_rescale(stored: np.ndarray, ds: pydicom.Dataset) -> np.ndarray | None:
    """Frame by frame through the Pixel Value Transformation functional group, in float64 (what
    pydicom's apply_modality_lut leaves to the caller for enhanced multi-frame objects)."""
    if "RescaleSlope" in ds or "PerFrameFunctionalGroupsSequence" not in ds:
        return None
    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
    frames = stored.reshape((-1, *stored.shape[-2:]))
    out = np.empty(frames.shape, np.float64)
    for i, frame in enumerate(frames):
        item = None
        for group in (ds.PerFrameFunctionalGroupsSequence[i], shared):
            if group is not None and "PixelValueTransformationSequence" in group:
                item = group.PixelValueTransformationSequence[0]
                break
        if item is None:
            return None
        out[i] = frame * float(item.RescaleSlope) + float(item.RescaleIntercept)
    return out.reshape(stored.shape)


def _reference(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray:
    """What the platform promises, computed with pydicom: real units for grey (float64 maths), 8-bit
    colour by the most significant bits, palettes by their high byte."""
    if str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
        rgb = apply_color_lut(stored, ds)
        return (rgb >> 8).astype(np.uint8) if rgb.dtype == np.uint16 else rgb
    frames = int(ds.get("NumberOfFrames") or 1)
    if stored.ndim == (4 if frames > 1 else 3):
        bits = int(ds.get("BitsStored") or 8)
        rgb = stored[..., :3]
        return rgb if rgb.dtype == np.uint8 else (rgb.astype(np.uint64) >> max(bits - 8, 0)).astype(np.uint8)
    enhanced = _enhanced_rescale(stored, ds)
    real = enhanced if enhanced is not None else apply_modality_lut(stored, ds)
    if "DoseGridScaling" in ds:
        real = real * float(ds.DoseGridScaling)
    return real


def _as_pydicom_layout(image: imaging.Image) -> np.ndarray:
    """Our data in pydicom's (frame,) row, column (, sample) order."""
    if image.frames is not None:
        return np.moveaxis(image.data, 2, 0)
    if image.kind == "volume":
        return np.swapaxes(image.data, 0, 2)
    return image.data


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_corpus_file(path: Path) -> None:
    try:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
    except Exception:  # pydicom cannot decode it: a clear refusal (or, with GDCM, a decoded image)
        try:
            imaging.load(path)
        except ImagingError as exc:
            assert str(exc) and "Traceback" not in str(exc)
        return
    image = imaging.load(path)
    expected = _reference(ds, stored)
    ours = _as_pydicom_layout(image)
    assert ours.shape == expected.shape
    if image.kind == "volume":
        expected = expected[_order_along_normal(ds, len(expected))]
    np.testing.assert_array_equal(ours, expected)


def _order_along_normal(ds: pydicom.Dataset, frames: int) -> np.ndarray:
    """Frame order along the slice normal (row x column direction, PS3.3 C.7.6.2.1.1), from per-frame
    Plane Position items; frames without them keep their stored order."""
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return np.arange(frames)
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = np.array([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    normal = np.cross(orientation[:3], orientation[3:])
    positions = [
        [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        for item in ds.PerFrameFunctionalGroupsSequence
    ]
    return np.argsort(np.asarray(positions) @ normal, kind="stable")


def test_the_corpus_is_the_full_one() -> None:
    """pydicom-data is installed: the walk covers its files, not only pydicom's bundled few."""
    names = {p.name for p in CORPUS}
    assert {"emri_small.dcm", "JPEG-lossy.dcm", "MR2_UNCI.dcm"} <= names and len(CORPUS) > 200
