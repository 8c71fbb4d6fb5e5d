"""DICOM files through pydicom: decoding (pylibjpeg plugins for JPEG, JPEG 2000, RLE), Modality LUT
to real units, VOI LUT / window for display, colour, multi-frame volumes with patient geometry."""

from __future__ import annotations

import math
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut

from . import filters, geometry, limits
from .display import auto_window
from .errors import ImagingError
from .image import Display, Image, VoiTable

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_INFLATE_CHUNK = 1024**2


def read_dataset(source: Any, *, stop_before_pixels: bool = False) -> Dataset:
    """dcmread that accepts bare data sets (no preamble) and reports problems as ImagingError.

    ``source`` is a path or a seekable binary file. A deflated data set is inflated whole by
    pydicom, so its inflated size is measured first and a decompression bomb refused.
    """
    try:
        if isinstance(source, str | Path):
            with open(source, "rb") as f:
                check_deflated_size(f)
        else:
            check_deflated_size(source)
        return pydicom.dcmread(source, force=True, stop_before_pixels=stop_before_pixels)
    except (ImagingError, MemoryError):
        raise
    except Exception as exc:  # pydicom raises many types for malformed input
        raise ImagingError(f"DICOM file could not be read: {exc}") from None


def check_deflated_size(f: Any) -> None:
    """For a Deflated Explicit VR Little Endian file, inflate the data set into nothing, counting
    bytes, and refuse it once it expands too much; the file position is left where it was."""
    start = f.tell()
    try:
        pydicom.filereader.read_preamble(f, True)
        meta = pydicom.filereader.read_dataset(
            f, is_implicit_VR=False, is_little_endian=True, stop_when=lambda tag, _vr, _n: tag.group != 2
        )
        deflated = meta.get("TransferSyntaxUID") == pydicom.uid.DeflatedExplicitVRLittleEndian
        compressed = f.read() if deflated else b""
    except Exception:  # a malformed file meta: dcmread says what is wrong with it
        return
    finally:
        f.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending = compressed
    inflated = 0
    while pending:
        try:
            inflated += len(inflater.decompress(pending, _INFLATE_CHUNK))
        except zlib.error:
            return  # dcmread reports the corrupt stream
        limits.check_inflated_size("Deflated DICOM data set", inflated, len(compressed))
        pending = inflater.unconsumed_tail


def read_dicom(path: Path) -> Image:
    return dataset_to_image(read_dataset(path))


def inspect_dicom(path: Path) -> dict[str, Any]:
    ds = read_dataset(path)
    check_pixel_data(ds)
    return describe(ds)


# -- facts -----------------------------------------------------------------------------------------


def transfer_syntax(ds: Dataset) -> pydicom.uid.UID | None:
    meta = getattr(ds, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def frame_count(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def _floats(value: Any) -> list[float] | None:
    """The numbers of a (multi-)value; None when missing, malformed or not finite."""
    if value is None or value == "":
        return None
    try:
        items = list(value) if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
        numbers = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    return numbers if all(math.isfinite(v) for v in numbers) else None


def _first(value: Any) -> float | None:
    values = _floats(value)
    return values[0] if values else None


def _whole(value: Any) -> int | None:
    number = _first(value)
    return int(number) if number is not None and number.is_integer() else None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def describe(ds: Dataset) -> dict[str, Any]:
    """JSON-friendly facts about a DICOM data set. Of the patient identifiers only PatientID, so
    that a viewer can group a user's results by patient / study / series."""
    ts = transfer_syntax(ds)
    sop = ds.get("SOPClassUID")
    modality = _text(ds.get("Modality"))
    units = _text(ds.get("RescaleType")) or ("HU" if modality == "CT" and "RescaleIntercept" in ds else None)
    if modality == "RTDOSE":
        units = _text(ds.get("DoseUnits"))
    facts = {
        "format": "dicom",
        "modality": modality,
        "sop_class": getattr(sop, "name", None) if sop else None,
        "transfer_syntax": ts.name if ts else None,
        "photometric_interpretation": _text(ds.get("PhotometricInterpretation")),
        "rows": ds.get("Rows"),
        "columns": ds.get("Columns"),
        "frames": frame_count(ds),
        "samples_per_pixel": ds.get("SamplesPerPixel"),
        "bits_allocated": ds.get("BitsAllocated"),
        "bits_stored": ds.get("BitsStored"),
        "pixel_representation": ds.get("PixelRepresentation"),
        "rescale_slope": _first(ds.get("RescaleSlope")),
        "rescale_intercept": _first(ds.get("RescaleIntercept")),
        "units": units,
        "window_center": _first(ds.get("WindowCenter")),
        "window_width": _first(ds.get("WindowWidth")),
        "pixel_spacing": _floats(ds.get("PixelSpacing")),
        "slice_thickness": _first(ds.get("SliceThickness")),
        "series_description": _text(ds.get("SeriesDescription")),
        "study_description": _text(ds.get("StudyDescription")),
        "body_part_examined": _text(ds.get("BodyPartExamined")),
        "manufacturer": _text(ds.get("Manufacturer")),
        "series_instance_uid": _text(ds.get("SeriesInstanceUID")),
        "series_number": _whole(ds.get("SeriesNumber")),
        "study_instance_uid": _text(ds.get("StudyInstanceUID")),
        "study_date": _text(ds.get("StudyDate")),
        "patient_id": _text(ds.get("PatientID")),
        "image_position_patient": _floats(ds.get("ImagePositionPatient")),
        "image_orientation_patient": _floats(ds.get("ImageOrientationPatient")),
    }
    return {k: (int(v) if isinstance(v, int) else v) for k, v in facts.items() if v is not None}


# -- pixel data ------------------------------------------------------------------------------------


def check_pixel_data(ds: Dataset) -> None:
    """Refuse data sets without pixels, too large to decode, or whose native pixel data is cut short."""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        sop = ds.get("SOPClassUID")
        if "Rows" in ds or "Image" in getattr(sop, "name", ""):
            raise ImagingError("DICOM file has no pixel data: the file is probably truncated")
        kind = f" ({sop.name})" if sop else ""
        raise ImagingError(f"DICOM file has no pixel data{kind}: it is not an image")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        raise ImagingError("DICOM image is missing Rows, Columns or Bits Allocated") from None
    if bits != 1 and (bits % 8 or not 8 <= bits <= 64):
        raise ImagingError(f"DICOM Bits Allocated of {bits} is not supported")
    if not 1 <= samples <= 4:
        raise ImagingError(f"DICOM Samples per Pixel of {samples} is not supported")
    frames = frame_count(ds)
    limits.check_image_size("DICOM image", rows, cols)
    if frames > 1:
        limits.check_volume_size("DICOM image", (cols, rows, frames), samples)
    pixels = rows * cols * frames * samples
    ts = transfer_syntax(ds)
    if "PixelData" not in ds or (ts is not None and ts.is_compressed):
        return
    if str(ds.get("PhotometricInterpretation", "")).startswith("YBR_FULL_422"):
        pixels = rows * cols * frames * 2  # chroma shared by two pixels
    expected = (pixels + 7) // 8 if bits == 1 else pixels * bits // 8
    found = len(ds.PixelData or b"")
    if found < expected:
        raise ImagingError(f"DICOM pixel data is truncated: expected {expected} bytes, found {found}")


def decode_pixels(ds: Dataset) -> np.ndarray:
    """Stored values, (frames,) rows, columns (, samples); YBR converted to RGB."""
    check_pixel_data(ds)
    try:
        return ds.pixel_array
    except MemoryError:
        raise
    except Exception as exc:  # decoders raise ValueError, RuntimeError, ... for bad streams
        ts = transfer_syntax(ds)
        syntax = f" ({ts.name})" if ts else ""
        raise ImagingError(f"DICOM pixel data could not be decoded{syntax}: {exc}") from None


def compact(values: np.ndarray) -> np.ndarray:
    """Whole-number results in the smallest fitting integer type, else float32."""
    dtype = filters.integral_dtype(values)
    return values.astype(dtype if dtype is not None else np.float32, copy=False)


def _group_item(ds: Dataset, sequence: str, frame: int | None = None) -> Dataset | None:
    """An item of a functional-group macro: per-frame if present, else shared."""
    groups = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        per_frame = ds.PerFrameFunctionalGroupsSequence
        if frame < len(per_frame):
            groups.append(per_frame[frame])
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for group in groups:
        if sequence in group and len(group[sequence].value):
            return group[sequence].value[0]
    return None


def rescale(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """stored x slope + intercept without a float64 copy of the whole array: in int32 when all are
    whole numbers that int32 holds, else in float32."""
    if stored.dtype.kind in "iu" and float(slope).is_integer() and float(intercept).is_integer():
        ends = [float(v) * slope + intercept for v in (stored.min(initial=0), stored.max(initial=0))]
        if all(-(2**31) <= v < 2**31 for v in ends):
            values = stored.astype(np.int32)
            if slope != 1:
                values *= int(slope)
            if intercept:
                values += int(intercept)
            return values
    values = stored.astype(np.float32)
    if slope != 1:
        values *= np.float32(slope)
    if intercept:
        values += np.float32(intercept)
    return values


def real_values(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality LUT: stored values to real units (HU for CT, Gy for RT dose, ...)."""
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    slope, intercept = _first(ds.get("RescaleSlope")), _first(ds.get("RescaleIntercept"))
    if ds.get("ModalityLUTSequence"):
        values = apply_modality_lut(stored, ds)
    elif slope is not None and intercept is not None:
        values = rescale(stored, slope, intercept)
    elif enhanced and "RescaleSlope" not in ds:
        frames = frame_count(ds)
        stack = stored.reshape((frames, *stored.shape[-2:]))
        out = np.empty(stack.shape, np.float32)
        for i in range(frames):
            item = _group_item(ds, "PixelValueTransformationSequence", i)
            slope = _first(item.get("RescaleSlope")) if item is not None else None
            intercept = _first(item.get("RescaleIntercept")) if item is not None else None
            out[i] = rescale(stack[i], 1.0 if slope is None else slope, intercept or 0.0)
        values = out.reshape(stored.shape)
    else:
        values = stored
    scaling = _first(ds.get("DoseGridScaling"))
    if scaling is not None:
        values = values.astype(np.float32)
        values *= np.float32(scaling)
    return compact(values)


def display_for(ds: Dataset) -> Display:
    """VOI LUT, window and polarity for grey images."""
    invert = str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    source: Dataset = ds
    if "WindowCenter" not in ds and "VOILUTSequence" not in ds:
        source = _group_item(ds, "FrameVOILUTSequence", 0) or ds
    table = None
    if "VOILUTSequence" in source and len(source.VOILUTSequence):
        table = _voi_table(source.VOILUTSequence[0])
    center, width = _first(source.get("WindowCenter")), _first(source.get("WindowWidth"))
    window = (center, width) if center is not None and width is not None and width > 0 else None
    function = str(source.get("VOILUTFunction") or "LINEAR").strip().upper()
    return Display(native=False, window=window, voi_function=function, voi_table=table, invert=invert)


def with_data_window(display: Display, values: np.ndarray) -> Display:
    """Without a VOI LUT or window, fix the window to the input's own range now, so that a
    processed image is shown on the same grey scale as its input."""
    if display.window is not None or display.voi_table is not None:
        return display
    return replace(display, window=auto_window(values), voi_function="LINEAR_EXACT")


def _voi_table(item: Dataset) -> VoiTable | None:
    try:
        n, first, bits = (int(v) for v in item.LUTDescriptor)
        raw = item.LUTData
    except (AttributeError, TypeError, ValueError):
        return None
    n = n or 65536
    if isinstance(raw, bytes):
        table = np.frombuffer(raw, dtype=np.uint8 if bits <= 8 and len(raw) == n else np.uint16)
    else:
        table = np.asarray(raw if isinstance(raw, list | tuple | pydicom.multival.MultiValue) else [raw])
    if table.size < n or bits < 1:
        return None
    return VoiTable(first_mapped=float(first), table=table[:n].astype(np.float32), bits=bits)


def _to_rgb8(values: np.ndarray, bits_stored: int) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    top = float(2 ** max(min(bits_stored, 16), 1) - 1)
    return np.clip(np.rint(values.astype(np.float32) * (255.0 / top)), 0, 255).astype(np.uint8)


# -- data set to image -----------------------------------------------------------------------------


def dataset_to_image(ds: Dataset) -> Image:
    """Decode one data set: a 2D image, or a volume (frames along z) when it has several frames."""
    stored = decode_pixels(ds)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    frames = frame_count(ds)
    meta = describe(ds)
    if photometric == "PALETTE COLOR":
        try:
            stored = apply_color_lut(stored, ds)
        except Exception as exc:
            raise ImagingError(f"DICOM palette could not be applied: {exc}") from None
        values, samples, display = _to_rgb8(stored, 16 if stored.dtype == np.uint16 else 8), "RGB", None
    elif stored.ndim == (4 if frames > 1 else 3):
        bits = int(ds.get("BitsStored") or 8)
        values, samples, display = _to_rgb8(stored[..., :3], bits), "RGB", None
    else:
        values, samples = real_values(stored, ds), "L"
        display = with_data_window(display_for(ds), values)
    display = display or Display(native=True)

    if frames == 1:
        spacing = _floats(ds.get("PixelSpacing")) or _floats(ds.get("ImagerPixelSpacing"))
        return Image(
            data=values,
            kind="2d",
            spacing=tuple(spacing[:2]) if spacing else None,
            samples=samples,
            display=display,
            metadata=meta,
        )
    order, affine, notes = frame_geometry(ds, frames)
    if np.any(order != np.arange(frames)):
        values = values[order]
    # (frame, row, column[, sample]) -> NIfTI voxel order (column, row, frame[, sample])
    data = np.ascontiguousarray(np.swapaxes(values, 0, 2))
    meta.update(notes)
    return Image(
        data=data,
        kind="volume",
        affine=affine,
        spacing=geometry.voxel_sizes(affine),
        samples=samples,
        display=display,
        metadata=meta,
    )


def frame_geometry(ds: Dataset, frames: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Frame order and voxel-to-RAS affine of a multi-frame data set."""
    notes: dict[str, Any] = {}
    measures = _group_item(ds, "PixelMeasuresSequence", 0)
    plane = _group_item(ds, "PlaneOrientationSequence", 0)
    source = measures if measures is not None else ds
    pixel_spacing = _floats(source.get("PixelSpacing")) or _floats(ds.get("PixelSpacing"))
    if not pixel_spacing or len(pixel_spacing) < 2:
        pixel_spacing = [1.0, 1.0]
        notes["spacing_assumed"] = True
    orientation = _floats((plane if plane is not None else ds).get("ImageOrientationPatient"))
    if orientation is not None and len(orientation) != 6:
        orientation = None
    step = _first(source.get("SpacingBetweenSlices")) or _first(source.get("SliceThickness"))
    if not step:
        step = _first(ds.get("SpacingBetweenSlices")) or _first(ds.get("SliceThickness")) or 1.0

    positions = _frame_positions(ds, frames, orientation)
    return stack_geometry(orientation, positions, pixel_spacing, step, frames, notes)


def _frame_positions(ds: Dataset, frames: int, orientation: list[float] | None) -> np.ndarray | None:
    if "PerFrameFunctionalGroupsSequence" in ds:
        found = []
        for i in range(frames):
            item = _group_item(ds, "PlanePositionSequence", i)
            position = _floats(item.get("ImagePositionPatient")) if item is not None else None
            if not position or len(position) != 3:
                return None
            found.append(position)
        return np.asarray(found, float)
    offsets = _floats(ds.get("GridFrameOffsetVector"))
    origin = _floats(ds.get("ImagePositionPatient"))
    if offsets and origin and len(offsets) == frames and len(origin) == 3:
        # RT dose: offsets along the normal from the first frame's position
        normal = geometry.slice_normal(orientation or (1, 0, 0, 0, 1, 0))
        return np.asarray(origin) + np.outer(offsets, normal)
    return None


def stack_geometry(
    orientation: list[float] | None,
    positions: np.ndarray | None,
    pixel_spacing: list[float],
    default_step: float,
    count: int,
    notes: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Order ``count`` slices along their normal and build the affine; without positions keep
    their order and step ``default_step`` mm along the normal."""
    notes = dict(notes or {})
    if positions is None or count < 2:
        origin = positions[0] if positions is not None and len(positions) else None
        affine = geometry.dicom_affine(orientation, origin, pixel_spacing, default_step)
        return np.arange(count), affine, notes
    order, distances = geometry.slice_order(positions, orientation or (1, 0, 0, 0, 1, 0))
    gaps = np.diff(distances)
    if np.any(gaps < 1e-3):
        raise ImagingError(
            "Several slices share one position (a 4D, multi-echo or duplicated series); "
            "only one 3D volume per series is supported"
        )
    if gaps.max() - gaps.min() > 0.01 * gaps.mean() + 1e-3:
        notes["irregular_slice_spacing"] = [round(float(g), 4) for g in (gaps.min(), gaps.max())]
    step = (positions[order[-1]] - positions[order[0]]) / (count - 1)
    affine = geometry.dicom_affine(orientation, positions[order[0]], pixel_spacing, step)
    return order, affine, notes
