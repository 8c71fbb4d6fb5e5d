"""Writing DICOM: a derived image of a DICOM input, a volume as a new series of one file per slice
(in a ZIP), and de-identification by the PS3.15 Annex E Basic Application Level Confidentiality
Profile. Pure pydicom and numpy; the operations that use these come on top.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import hmac
import io
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from . import filters
from .geometry import LPS_TO_RAS
from .image import Image

# Our implementation's identity in the files we write (PS3.7 / PS3.10 File Meta).
IMPLEMENTATION_VERSION_NAME = "RADIOLOGY_1"
MANUFACTURER = "radiology-platform"

# Attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1, C.7.2.2) carried from
# the input into a derived image, so that it files under the same patient and study.
_PATIENT_AND_STUDY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "OtherPatientIDsSequence",
    "EthnicGroup",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "SpecificCharacterSet",
)
# Series and acquisition facts that stay true of a derived image.
_SERIES_FACTS = ("Modality", "BodyPartExamined", "PatientPosition", "Laterality", "ImageLaterality")
# SOP classes kept for a grey derived image; anything else becomes Secondary Capture.
_KEPT_SOP_CLASSES = frozenset({CTImageStorage, MRImageStorage})
_SECONDARY_CAPTURE = frozenset(
    {
        SecondaryCaptureImageStorage,
        MultiFrameTrueColorSecondaryCaptureImageStorage,
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    }
)


class DicomWriteError(ValueError):
    """An image that cannot be written as asked (e.g. colour as a CT slice); words for users."""


# -- pixel values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredValues:
    """Pixel values as DICOM stores them, with the rescale that gives back the real values."""

    pixels: np.ndarray  # uint8, uint16 or int16
    slope: str  # DS strings, exactly as written
    intercept: str

    @property
    def bits(self) -> int:
        return self.pixels.dtype.itemsize * 8

    @property
    def signed(self) -> bool:
        return self.pixels.dtype.kind == "i"


def stored_values(real: np.ndarray) -> StoredValues:
    """Real values (HU, ...) as 16-bit stored values plus RescaleSlope/RescaleIntercept.

    Whole numbers that int16 or uint16 hold are stored as they are (slope 1, intercept 0: exact).
    Anything else is spread over uint16 between its minimum and maximum; the slope and intercept
    are rounded to the decimal strings DICOM keeps, and the stored values are computed with those
    rounded numbers, so a reader gets each value back within half a step (slope / 2).
    """
    dtype = filters.integral_dtype(real)
    if dtype is not None and dtype != np.int32:
        return StoredValues(real.astype(dtype), "1", "0")
    finite = real[np.isfinite(real)] if real.dtype.kind == "f" else real
    if finite.size == 0:
        return StoredValues(np.zeros(real.shape, np.uint16), "1", "0")
    low, high = float(finite.min()), float(finite.max())
    intercept = format_number_as_ds(low)
    span = high - float(intercept)
    slope = format_number_as_ds(span / 65535.0) if span > 0 else "1"
    scaled = (np.nan_to_num(real.astype(np.float64), nan=float(intercept)) - float(intercept)) / float(slope)
    pixels = np.clip(np.rint(scaled), 0, 65535).astype(np.uint16)
    return StoredValues(pixels, slope, intercept)


def _set_pixels_grey(ds: Dataset, stored: StoredValues) -> None:
    pixels = stored.pixels
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = stored.bits
    ds.BitsStored = stored.bits
    ds.HighBit = stored.bits - 1
    ds.PixelRepresentation = 1 if stored.signed else 0
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.PixelData = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("<"))).tobytes()


def _set_pixels_rgb(ds: Dataset, rgb: np.ndarray) -> None:
    rgb = filters.cast_like(rgb, np.uint8) if rgb.dtype != np.uint8 else rgb
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.Rows, ds.Columns = int(rgb.shape[-3]), int(rgb.shape[-2])
    ds.PixelData = np.ascontiguousarray(rgb[..., :3]).tobytes()


def _set_display(ds: Dataset, image: Image) -> None:
    display = image.display
    ds.PhotometricInterpretation = "MONOCHROME1" if display.invert else "MONOCHROME2"
    if display.window is not None and not display.native:
        center, width = display.window
        ds.WindowCenter = format_number_as_ds(float(center))
        ds.WindowWidth = format_number_as_ds(float(width))
        if display.voi_function in ("LINEAR_EXACT", "SIGMOID"):
            ds.VOILUTFunction = display.voi_function


# -- derived images --------------------------------------------------------------------------------


def derivation_description(operation: str, params: dict[str, Any]) -> str:
    """The operation and its params, as DerivationDescription (ST, at most 1024 characters)."""
    text = f"{operation} {json.dumps(params, sort_keys=True, separators=(',', ':'))}"
    return text if len(text) <= 1024 else text[:1021] + "..."


def _new_dataset(sop_class: str, sop_instance: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    return ds


def _copy(source: Dataset | None, target: Dataset, keywords: Iterable[str]) -> None:
    if source is None:
        return
    for keyword in keywords:
        if keyword in source:
            target[keyword] = source[keyword]


def _now() -> tuple[str, str]:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


@dataclass
class SeriesIdentity:
    """What the files of one derived series share: their Series Instance UID and number, its
    description and the Frame of Reference (the input's, while the geometry is the input's)."""

    series_instance_uid: str = field(default_factory=generate_uid)
    series_number: int = 9001
    series_description: str = "Derived"
    frame_of_reference_uid: str | None = None


def derived_header(
    source: Dataset | None,
    *,
    operation: str,
    params: dict[str, Any],
    series: SeriesIdentity,
    grey: bool,
    sop_class: str | None = None,
) -> Dataset:
    """A new instance's header: patient and study of ``source`` kept (a new study when there is no
    DICOM source), new SOP Instance UID, the series' identity, ImageType DERIVED\\SECONDARY, the
    operation and params as DerivationDescription, the source image referenced."""
    if sop_class is None:
        source_class = source.get("SOPClassUID") if source is not None else None
        kept = grey and source_class in _KEPT_SOP_CLASSES
        sop_class = source_class if kept else SecondaryCaptureImageStorage
    ds = _new_dataset(sop_class, generate_uid())
    _copy(source, ds, _PATIENT_AND_STUDY)
    _copy(source, ds, _SERIES_FACTS)
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        if keyword not in ds:
            setattr(ds, keyword, None)  # Type 2: present, empty when unknown
    if "Modality" not in ds:
        ds.Modality = "OT"
    date, time = _now()
    ds.ContentDate, ds.ContentTime = date, time
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.SeriesNumber = series.series_number
    ds.SeriesDescription = series.series_description[:64]
    if series.frame_of_reference_uid:
        ds.FrameOfReferenceUID = series.frame_of_reference_uid
    ds.Manufacturer = MANUFACTURER
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = derivation_description(operation, params)
    if sop_class in _SECONDARY_CAPTURE:
        ds.ConversionType = "WSD"  # workstation
    if source is not None and "SOPInstanceUID" in source and "SOPClassUID" in source:
        reference = Dataset()
        reference.ReferencedSOPClassUID = source.SOPClassUID
        reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
        ds.SourceImageSequence = [reference]
    return ds


def derived_image(
    source: Dataset,
    image: Image,
    *,
    operation: str,
    params: dict[str, Any],
    keep_geometry: bool = True,
    series: SeriesIdentity | None = None,
) -> Dataset:
    """A 2D result of an operation on the DICOM ``source``, as a new DICOM instance in a new series.

    Grey results in real units go through RescaleSlope/RescaleIntercept (see ``stored_values``);
    display values (8-bit PNG-like results) are written as they are, colour as RGB. With
    ``keep_geometry`` the input's position, orientation and frame of reference are kept, the pixel
    spacing taken from ``image`` (a resize changes it, keeping the field of view's edges).
    """
    if image.kind != "2d" or image.frames is not None:
        raise DicomWriteError("derived_image writes one 2D image; volumes go through write_volume_series")
    if series is None:
        description = str(source.get("SeriesDescription") or source.get("Modality") or "image")
        series = SeriesIdentity(series_description=f"{description} ({operation})")
        if keep_geometry:
            series.frame_of_reference_uid = source.get("FrameOfReferenceUID")
    colour = image.samples in ("RGB", "RGBA")
    if image.samples == "LA":
        raise DicomWriteError("A grey image with an alpha channel cannot be written as DICOM")
    ds = derived_header(source, operation=operation, params=params, series=series, grey=not colour)
    ds.InstanceNumber = 1
    if colour:
        _set_pixels_rgb(ds, image.data)
    elif image.display.native:
        values = image.data
        dtype = np.uint8 if values.dtype == np.uint8 else np.uint16
        _set_pixels_grey(ds, StoredValues(filters.cast_like(values, dtype), "1", "0"))
        ds.PhotometricInterpretation = "MONOCHROME2"
    else:
        stored = stored_values(image.data)
        _set_pixels_grey(ds, stored)
        ds.RescaleSlope, ds.RescaleIntercept = stored.slope, stored.intercept
        if "RescaleType" in source:
            ds.RescaleType = source.RescaleType
        _set_display(ds, image)
    if keep_geometry:
        _keep_plane_geometry(source, image, ds)
    elif image.spacing is not None:
        ds.PixelSpacing = [format_number_as_ds(float(s)) for s in image.spacing[:2]]
    return ds


def derived_frames(
    source: Dataset,
    image: Image,
    *,
    operation: str,
    params: dict[str, Any],
    series: SeriesIdentity | None = None,
) -> Dataset:
    """A time series result (a cine processed frame by frame) as one multi-frame instance: Multi-frame
    True Colour Secondary Capture for colour, Multi-frame Grayscale Word Secondary Capture (16-bit,
    real units through RescaleSlope/RescaleIntercept) for grey; Frame Time and the Frame Increment
    Pointer to it say the frames are time, as in the input."""
    if image.frames is None:
        raise DicomWriteError("derived_frames writes a time series of 2D frames")
    if series is None:
        description = str(source.get("SeriesDescription") or source.get("Modality") or "cine")
        series = SeriesIdentity(series_description=f"{description} ({operation})")
    colour = image.samples in ("RGB", "RGBA")
    if image.samples == "LA":
        raise DicomWriteError("A grey image with an alpha channel cannot be written as DICOM")
    if colour:
        sop_class = MultiFrameTrueColorSecondaryCaptureImageStorage
    else:
        sop_class = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds = derived_header(
        source, operation=operation, params=params, series=series, grey=not colour, sop_class=sop_class
    )
    ds.InstanceNumber = 1
    frames = np.moveaxis(image.data, 2, 0)  # (frame, row, column[, sample]) as DICOM stores them
    ds.NumberOfFrames = frames.shape[0]
    if colour:
        _set_pixels_rgb(ds, frames)
    else:
        if image.display.native:
            stored = StoredValues(filters.cast_like(frames, np.uint16), "1", "0")
        else:
            stored = stored_values(frames)
            if stored.pixels.dtype != np.uint16:  # this SOP class stores unsigned 16-bit values
                low = int(stored.pixels.min(initial=0))
                shifted = (stored.pixels.astype(np.int32) - low).astype(np.uint16)
                intercept = float(stored.intercept) + low * float(stored.slope)
                stored = StoredValues(shifted, stored.slope, format_number_as_ds(intercept))
        _set_pixels_grey(ds, stored)
        ds.RescaleSlope, ds.RescaleIntercept = stored.slope, stored.intercept
        ds.RescaleType = str(source.get("RescaleType") or "US")  # US: unspecified
        _set_display(ds, image)
        if image.display.invert:
            ds.PhotometricInterpretation = "MONOCHROME2"  # this SOP class allows no MONOCHROME1
    interval = image.frames.interval_ms
    ds.FrameTime = format_number_as_ds(float(interval)) if interval else "0"
    ds.FrameIncrementPointer = Tag("FrameTime")
    if image.spacing is not None:
        ds.PixelSpacing = [format_number_as_ds(float(s)) for s in image.spacing[:2]]
    return ds


def _keep_plane_geometry(source: Dataset, image: Image, ds: Dataset) -> None:
    """Position, orientation and spacing of a 2D result on the input's plane. A result on another
    grid (resized) covers the same field of view: its first pixel centre moves by half the change
    of the pixel size along each direction."""
    old = source.get("PixelSpacing")
    new = image.spacing
    if new is not None:
        ds.PixelSpacing = [format_number_as_ds(float(s)) for s in new[:2]]
    if "ImageOrientationPatient" in source:
        ds.ImageOrientationPatient = source.ImageOrientationPatient
    if "ImagePositionPatient" in source:
        position = np.asarray([float(v) for v in source.ImagePositionPatient])
        if old is not None and new is not None and "ImageOrientationPatient" in source:
            orientation = np.asarray([float(v) for v in source.ImageOrientationPatient])
            row_dir, col_dir = orientation[:3], orientation[3:]
            d_row = (float(new[0]) - float(old[0])) / 2.0  # row spacing: moving down a column
            d_col = (float(new[1]) - float(old[1])) / 2.0
            position = position + row_dir * d_col + col_dir * d_row
        ds.ImagePositionPatient = [format_number_as_ds(float(v)) for v in position]
    for keyword in ("SliceThickness", "SliceLocation", "SpacingBetweenSlices"):
        if keyword in source:
            ds[keyword] = source[keyword]


def write_dataset(ds: Dataset, path: Path) -> Path:
    """Save as a DICOM Part 10 file (preamble, file meta), explicit VR little endian."""
    ds.save_as(path, enforce_file_format=True)
    return path


# -- a volume as a series --------------------------------------------------------------------------


def volume_plane_geometry(affine: np.ndarray) -> tuple[list[float], list[float], np.ndarray, float]:
    """From a voxel-to-RAS affine: ImageOrientationPatient (row then column direction cosines, LPS),
    PixelSpacing (row spacing, column spacing), the LPS affine, and the slice step in mm."""
    lps = np.linalg.inv(LPS_TO_RAS) @ np.asarray(affine, float)
    along_row, along_column, step = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    column_spacing, row_spacing = float(np.linalg.norm(along_row)), float(np.linalg.norm(along_column))
    if column_spacing == 0 or row_spacing == 0:
        raise DicomWriteError("The volume's affine is degenerate: a voxel axis has zero length")
    orientation = [*(along_row / column_spacing), *(along_column / row_spacing)]
    return orientation, [row_spacing, column_spacing], lps, float(np.linalg.norm(step))


def volume_series(
    image: Image,
    *,
    operation: str,
    params: dict[str, Any],
    source: Dataset | None = None,
    series: SeriesIdentity | None = None,
) -> list[Dataset]:
    """A volume as a new series of single-frame instances, one per slice along its third voxel axis.

    Each slice gets ImagePositionPatient (its first voxel, LPS), the shared ImageOrientationPatient,
    PixelSpacing, SliceThickness and SpacingBetweenSlices (the slice step), and the volume's real
    units through one RescaleSlope/RescaleIntercept for all slices. Patient and study come from
    ``source`` (any DICOM instance of the input) when there is one.
    """
    if image.kind != "volume" or image.affine is None:
        raise DicomWriteError("volume_series writes a volume with an affine")
    data = image.data
    colour = image.samples in ("RGB", "RGBA")
    if data.ndim != (4 if colour else 3):
        raise DicomWriteError(
            f"Only 3D volumes can be written as a DICOM series; this one has shape {list(data.shape)}"
        )
    orientation, pixel_spacing, lps, step = volume_plane_geometry(image.affine)
    if series is None:
        description = str(source.get("SeriesDescription") or "") if source is not None else ""
        series = SeriesIdentity(series_description=f"{description or 'Volume'} ({operation})")
    if series.frame_of_reference_uid is None:
        same_frame = source is not None and source.get("FrameOfReferenceUID")
        series.frame_of_reference_uid = str(same_frame) if same_frame else generate_uid()
    stored = None if colour else stored_values(data)
    instances = []
    for k in range(data.shape[2]):
        ds = derived_header(source, operation=operation, params=params, series=series, grey=not colour)
        ds.InstanceNumber = k + 1
        if colour:
            _set_pixels_rgb(ds, np.swapaxes(data[:, :, k], 0, 1))
        else:
            assert stored is not None
            _set_pixels_grey(ds, StoredValues(stored.pixels[:, :, k].T, stored.slope, stored.intercept))
            ds.RescaleSlope, ds.RescaleIntercept = stored.slope, stored.intercept
            if source is not None and "RescaleType" in source:
                ds.RescaleType = source.RescaleType
            _set_display(ds, image)
        position = lps @ [0.0, 0.0, float(k), 1.0]
        ds.ImagePositionPatient = [format_number_as_ds(float(v)) for v in position[:3]]
        ds.ImageOrientationPatient = [format_number_as_ds(float(v)) for v in orientation]
        ds.PixelSpacing = [format_number_as_ds(float(v)) for v in pixel_spacing]
        ds.SliceThickness = format_number_as_ds(step)
        ds.SpacingBetweenSlices = format_number_as_ds(step)
        normal = np.cross(orientation[:3], orientation[3:])
        ds.SliceLocation = format_number_as_ds(float(position[:3] @ normal))
        ds.PositionReferenceIndicator = None
        instances.append(ds)
    return instances


def write_volume_series(
    image: Image,
    path: Path,
    *,
    operation: str,
    params: dict[str, Any],
    source: Dataset | None = None,
    series: SeriesIdentity | None = None,
) -> Path:
    """``volume_series`` written as a ZIP of Part 10 files, ``slice_0001.dcm`` upwards."""
    instances = volume_series(image, operation=operation, params=params, source=source, series=series)
    width = max(4, len(str(len(instances))))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, ds in enumerate(instances, start=1):
            buffer = io.BytesIO()  # pydicom seeks while writing: a ZIP member stream cannot
            ds.save_as(buffer, enforce_file_format=True)
            zf.writestr(f"slice_{k:0{width}d}.dcm", buffer.getvalue())
    return path


# -- de-identification (PS3.15 Annex E) ------------------------------------------------------------

PROFILE_TABLE = Path(__file__).with_name("data") / "ps3_15_table_e1_1.tsv"
DEIDENTIFICATION_METHOD = "DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile"
# PS3.16 CID 7050 "De-identification Method": the Basic Application Confidentiality Profile.
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")

# UIDs the standard itself defines (SOP classes, transfer syntaxes, coding schemes): not identifying.
DICOM_UID_ROOT = "1.2.840.10008."

# How a compound action of Table E.1-1 is carried out here, without the IOD's attribute types at
# hand: the choice that is always conformant and keeps the least (PS3.15 E.1.1 allows either).
_COMPOUND = {"X/Z": "Z", "X/D": "D", "X/Z/D": "D", "Z/D": "D", "X/Z/U*": "U"}

# Dummy values (action D) per value representation: valid, non-empty, and saying nothing.
_DUMMY: dict[str, Any] = {
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": "ANONYMOUS",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": "ANONYMOUS",
    "LT": "ANONYMOUS",
    "PN": "ANONYMOUS",
    "SH": "ANONYMOUS",
    "ST": "ANONYMOUS",
    "UC": "ANONYMOUS",
    "UT": "ANONYMOUS",
    "UR": "ANONYMOUS",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "UL": 0,
    "US": 0,
    "SV": 0,
    "UV": 0,
    "OB": b"\x00\x00",
    "OW": b"\x00\x00",
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "UN": b"\x00\x00",
}


@dataclass(frozen=True)
class ProfileRule:
    tag: str  # "(GGGG,EEEE)", with XX for repeating groups
    keyword: str
    name: str
    action: str  # as in the table: X, Z, D, U or a compound such as X/Z/D


@cache
def profile_rules() -> tuple[ProfileRule, ...]:
    """Every row of Table E.1-1 (Basic Profile column), from the data file in the repository."""
    with open(PROFILE_TABLE, encoding="utf-8") as f:
        lines = [line for line in f if not line.startswith("#")]
    return tuple(
        ProfileRule(row["tag"], row["keyword"], row["name"], row["basic_profile"])
        for row in csv.DictReader(lines, delimiter="\t")
    )


@cache
def _actions() -> tuple[dict[int, str], list[tuple[int, int, str]]]:
    """Exact tags -> action, and masked rules (tag & mask == value) for repeating groups."""
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, str]] = []
    for rule in profile_rules():
        text = rule.tag.strip("()").replace(",", "")
        if text.startswith("GGGG"):
            continue  # private attributes: removed wholesale
        action = _COMPOUND.get(rule.action, rule.action)
        if "X" in text:
            mask = int("".join("0" if c == "X" else "F" for c in text), 16)
            value = int(text.replace("X", "0"), 16)
            masked.append((mask, value, action))
        else:
            exact[int(text, 16)] = action
    return exact, masked


def profile_action(tag: BaseTag | int) -> str | None:
    """The action (X, Z, D or U) the Basic Profile takes on ``tag``, or None to keep it."""
    tag = int(tag)
    exact, masked = _actions()
    if tag in exact:
        return exact[tag]
    for mask, value, action in masked:
        if tag & mask == value and (tag >> 16) % 2 == 0:
            return action
    return None


class UidMap:
    """Consistent UID replacement within a job: the same input UID always gives the same new UID, in
    any process, for a given server ``secret`` and ``job_id``; another job or another secret gives
    unrelated UIDs. The new UID is a keyed hash, HMAC-SHA256 with the secret as key over the job id
    and the original UID (each length-prefixed, after a fixed context label), so knowing the job id
    and guessing an original UID (a site's UID root and a likely suffix, a UID from another copy of
    the study) does not tell whether it is the one behind an output: that needs the secret.

    The new UIDs are 2.25 UIDs (PS3.5 B.2): the first 128 bits of the HMAC, with the version (8,
    custom, RFC 9562) and variant bits of a UUID set, written as one decimal integer. That is at
    least 2**79, so it has no leading zero and at most 39 digits: 44 characters in all (PS3.5 9.1
    allows 64), 122 bits of the HMAC kept."""

    def __init__(self, secret: str | bytes, job_id: str) -> None:
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if not key:
            raise ValueError("a UID map needs a non-empty secret")
        if not job_id:
            raise ValueError("a UID map needs a job id")
        self._mac = hmac.new(key, _length_prefixed(UID_HASH_CONTEXT), hashlib.sha256)
        self._mac.update(_length_prefixed(job_id.encode()))
        self._seen: dict[str, str] = {}

    def __call__(self, uid: str) -> str:
        uid = str(uid).strip()
        if not uid:
            return uid
        if uid not in self._seen:
            mac = self._mac.copy()
            mac.update(_length_prefixed(uid.encode()))
            self._seen[uid] = uid_from_digest(mac.digest())
        return self._seen[uid]


UID_HASH_CONTEXT = b"radiology anonymize UID v1"


def _length_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def uid_from_digest(digest: bytes) -> str:
    """A 2.25 UID (PS3.5 B.2) of the first 16 bytes of a hash: a UUID of version 8 (RFC 9562's
    custom version) and the RFC 4122 variant, as a decimal integer."""
    value = int.from_bytes(digest[:16], "big")
    value = (value & ~(0xF << 76)) | (0x8 << 76)  # version 8
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # variant 10xx
    return f"2.25.{value}"


@dataclass
class AnonymizationReport:
    removed: int = 0
    emptied: int = 0
    dummied: int = 0
    uids_replaced: int = 0
    private_removed: int = 0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "removed": self.removed,
            "emptied": self.emptied,
            "dummied": self.dummied,
            "uids_replaced": self.uids_replaced,
            "private_removed": self.private_removed,
            "warnings": list(self.warnings),
        }


def anonymize(ds: Dataset, uids: UidMap) -> AnonymizationReport:
    """De-identify ``ds`` in place by the Basic Application Level Confidentiality Profile
    (PS3.15 E.1, Table E.1-1): every attribute of the table gets its action at any depth of nested
    sequences (a sequence with a dummy action keeps its items with every value in them dummied:
    ``_dummy_item``), private attributes are removed, PatientIdentityRemoved is YES and the method is
    recorded (DeidentificationMethod and its code). Pixel data is not touched: a warning says so
    when Burned In Annotation is YES or not stated, as text in the pixels then survives.
    """
    report = AnonymizationReport()
    burned = str(ds.get("BurnedInAnnotation") or "").strip().upper()
    report.private_removed = _remove_private(ds)
    _walk(ds, uids, report)
    if getattr(ds, "file_meta", None) is not None and "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE_CODE
    ds.DeidentificationMethodCodeSequence = [code]
    if burned == "YES":
        report.warnings.append(
            "Burned In Annotation is YES: identifying text may be drawn in the pixels, which "
            "de-identification leaves unchanged"
        )
    elif burned != "NO":
        report.warnings.append(
            "Burned In Annotation is not stated: the pixels may carry identifying text, which "
            "de-identification leaves unchanged"
        )
    return report


def _remove_private(ds: Dataset) -> int:
    count = 0
    for elem in list(ds):
        if elem.tag.is_private:
            del ds[elem.tag]
            count += 1
        elif elem.VR == "SQ":
            for item in elem.value or []:
                count += _remove_private(item)
    return count


def _walk(ds: Dataset, uids: UidMap, report: AnonymizationReport) -> None:
    for elem in list(ds):
        action = profile_action(elem.tag)
        if action == "X":
            del ds[elem.tag]
            report.removed += 1
        elif elem.VR == "SQ":
            if action == "Z":
                elem.value = Sequence()
                report.emptied += 1
            else:  # kept, dummied (D) or holding references (U): clean every item
                for item in elem.value or []:
                    _walk(item, uids, report)
                    if action == "D":
                        _dummy_item(item, uids)
                if action == "D":
                    report.dummied += 1
        elif action == "Z":
            _empty(elem)
            report.emptied += 1
        elif action == "D":
            _dummy(elem, uids)
            report.dummied += 1
        elif action == "U":
            _replace_uid(elem, uids)
            report.uids_replaced += 1


def _dummy_item(ds: Dataset, uids: UidMap) -> None:
    """An item of a sequence the profile gives a dummy value (D: Institution Code Sequence, Person
    Identification Code Sequence, Content Sequence, Graphic Annotation Sequence, ...): once the
    table's own actions are done, every value left in it, at any depth, is replaced by a dummy of its
    VR. The items hold attributes that are not in the table themselves (Code Meaning, Text Value,
    Unformatted Text Value) but carry the identifying text here: an institution's or a person's
    name, a report's words. UIDs are replaced as everywhere else (the same new UID for the same
    original), except the standard's own (1.2.840.10008..., SOP classes and the like), which
    identify nobody."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                _dummy_item(item, uids)
        elif elem.is_empty:
            continue
        elif elem.VR == "UI":
            if profile_action(elem.tag) in ("U", "D"):
                continue  # replaced by the table's action already
            value = elem.value
            values = value if isinstance(value, list | pydicom.multival.MultiValue) else [value]
            if not all(str(v).startswith(DICOM_UID_ROOT) for v in values):
                _replace_uid(elem, uids)
        elif elem.VR in _DUMMY:
            elem.value = _DUMMY[elem.VR]
        else:  # AT: no dummy says nothing, so nothing is kept
            _empty(elem)


def _empty(elem: DataElement) -> None:
    elem.value = b"" if elem.VR in ("OB", "OW", "OD", "OF", "OL", "OV", "UN") else None


def _dummy(elem: DataElement, uids: UidMap) -> None:
    if elem.VR == "UI":
        _replace_uid(elem, uids)
        return
    elem.value = _DUMMY.get(elem.VR, "ANONYMOUS")


def _replace_uid(elem: DataElement, uids: UidMap) -> None:
    if elem.VR != "UI":  # the profile's U on a non-UID attribute: a dummy value is the safe reading
        elem.value = _DUMMY.get(elem.VR, "ANONYMOUS")
        return
    value = elem.value
    if isinstance(value, list | pydicom.multival.MultiValue):
        elem.value = [uids(str(v)) for v in value]
    elif value:
        elem.value = uids(str(value))


def anonymize_file(source: Path, target: Path, uids: UidMap) -> AnonymizationReport:
    """Read ``source``, de-identify it, write ``target`` in the same transfer syntax."""
    ds = pydicom.dcmread(source, force=True)
    report = anonymize(ds, uids)
    meta = getattr(ds, "file_meta", None)
    ds.save_as(target, enforce_file_format=meta is not None and "TransferSyntaxUID" in meta)
    return report


def tag_of(rule: ProfileRule) -> BaseTag | None:
    """The tag of a table row; None for repeating-group and private rows."""
    text = rule.tag.strip("()").replace(",", "")
    if "X" in text or text.startswith("GGGG"):
        return None
    return Tag(int(text, 16))
