"""DICOM files through pydicom: decoding (pydicom's plugins: pylibjpeg for JPEG, JPEG 2000, RLE, then
Pillow; GDCM as the last resort), Modality LUT to real units, VOI LUT / window for display, colour,
multi-frame data as a volume when its frames are positions in space, else as a time series."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space, get_decoder
from pydicom.pixels import pixel_array as pydicom_pixel_array
from pydicom.tag import Tag

from . import filters, geometry, limits
from .display import auto_window
from .errors import ImagingError
from .image import Display, Frames, Image, VoiTable

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_INFLATE_CHUNK = 1024**2

# Frame Increment Pointer (0028,0009) targets that make the frames positions in space: RT dose
# grid offsets and NM slice vectors. Any other target (Frame Time, Frame Time Vector, ...) is time.
_SPATIAL_POINTERS = frozenset({Tag(0x3004, 0x000C), Tag(0x0054, 0x0080)})


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
    facts = describe(ds)
    frames = frame_count(ds)
    if frames > 1:
        layout = frame_layout(ds, frames)
        if isinstance(layout, Frames):
            facts["frame_axis"] = layout.reason
    return facts


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
    limits.check_memory("DICOM image", pixels, bits / 8, "volume" if frames > 1 else "2d")
    ts = transfer_syntax(ds)
    if "PixelData" in ds and ts is not None and ts.is_compressed:
        limits.check_inflated_size("Compressed DICOM pixel data", pixels * bits // 8, len(ds.PixelData),
                                   limits.IMAGE_INFLATE_RATIO_FLOOR)
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
    return decode_pixels_noting(ds)[0]


def decode_pixels_noting(ds: Dataset) -> tuple[np.ndarray, str]:
    """``decode_pixels`` and the name of the decoder that succeeded.

    pydicom's own plugins first (GDCM's left out, so that adding GDCM changes no file that decoded
    before); GDCM's image reader last, for streams the others refuse, such as 12-bit JPEG Extended.
    """
    check_pixel_data(ds)
    ts = transfer_syntax(ds)
    try:
        return _decode_with_pydicom(ds, ts)
    except MemoryError:
        raise
    except Exception as exc:  # decoders raise ValueError, RuntimeError, ... for bad streams
        first_error = exc
    if ts is not None and ts.is_compressed and gdcm_available():
        try:
            return decode_with_gdcm(ds), "gdcm"
        except MemoryError:
            raise
        except Exception:  # GDCM could not either: pydicom's words say more
            pass
    syntax = f" ({ts.name})" if ts else ""
    raise ImagingError(f"DICOM pixel data could not be decoded{syntax}: {first_error}") from None


def _decode_with_pydicom(ds: Dataset, ts: pydicom.uid.UID | None) -> tuple[np.ndarray, str]:
    if ts is None or not ts.is_compressed:
        return ds.pixel_array, "pydicom"
    try:
        plugins = [p for p in get_decoder(ts).available_plugins if p != "gdcm"]
    except NotImplementedError:  # no pydicom decoder for this syntax at all
        plugins = []
    if not plugins:
        raise NotImplementedError(f"pydicom has no decoder available for {ts.name}")
    errors = []
    for plugin in plugins:
        try:
            return pydicom_pixel_array(ds, decoding_plugin=plugin), plugin
        except MemoryError:
            raise
        except Exception as exc:
            errors.append(f"{plugin}: {exc}")
    raise RuntimeError("; ".join(errors))


def gdcm_available() -> bool:
    try:
        import gdcm  # noqa: F401  (python-gdcm)
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null for a moment: C libraries write there directly, and a
    service's stderr carries one JSON log record per line."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def decode_with_gdcm(ds: Dataset) -> np.ndarray:
    """GDCM's own image reader on the data set written to a temporary file, in pydicom's layout."""
    import gdcm

    gdcm.Trace.WarningOff()
    gdcm.Trace.ErrorOff()
    fd, name = tempfile.mkstemp(suffix=".dcm")
    try:
        with os.fdopen(fd, "wb") as f:
            ds.save_as(f, enforce_file_format=False)
        with _stderr_silenced():  # its JPEG codecs print to stderr; failure shows in Read()
            reader = gdcm.ImageReader()
            reader.SetFileName(name)
            if not reader.Read():
                raise RuntimeError("GDCM could not read the file")
            image = reader.GetImage()
            raw = image.GetBuffer().encode("utf-8", "surrogateescape")  # the binding returns str
            photometric = image.GetPhotometricInterpretation().GetString().strip()
    finally:
        os.unlink(name)
    bits = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{max(bits // 8, 1)}")
    rows, cols, samples = int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel") or 1)
    frames = frame_count(ds)
    expected = rows * cols * samples * frames * dtype.itemsize
    if len(raw) != expected:
        raise RuntimeError(f"GDCM returned {len(raw)} bytes, expected {expected}")
    shape = (frames, rows, cols, samples) if frames > 1 else (rows, cols, samples)
    values = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    if samples == 1:
        return values[..., 0]
    if photometric.startswith("YBR"):
        values = convert_color_space(values, photometric, "RGB")
    return values


def compact(values: np.ndarray) -> np.ndarray:
    """Whole-number results in the smallest fitting integer type; other values keep float64 when
    they were computed in it (a non-integer slope: pydicom's precision), else float32."""
    dtype = filters.integral_dtype(values)
    if dtype is None:
        dtype = np.float64 if values.dtype == np.float64 else np.float32
    return values.astype(dtype, copy=False)


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
    """stored x slope + intercept: in int32 when all are whole numbers that int32 holds (exact, half
    the memory of float64), else in float64 like pydicom's apply_modality_lut."""
    if stored.dtype.kind in "iu" and float(slope).is_integer() and float(intercept).is_integer():
        ends = [float(v) * slope + intercept for v in (stored.min(initial=0), stored.max(initial=0))]
        if all(-(2**31) <= v < 2**31 for v in ends):
            values = stored.astype(np.int32)
            if slope != 1:
                values *= int(slope)
            if intercept:
                values += int(intercept)
            return values
    values = stored.astype(np.float64)
    values *= slope
    values += intercept
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
        factors = []
        for i in range(frames):
            item = _group_item(ds, "PixelValueTransformationSequence", i)
            slope = _first(item.get("RescaleSlope")) if item is not None else None
            intercept = _first(item.get("RescaleIntercept")) if item is not None else None
            factors.append((1.0 if slope is None else slope, intercept or 0.0))
        whole = all(float(v).is_integer() for pair in factors for v in pair)
        out = np.empty(stack.shape, np.int32 if whole else np.float64)
        for i, (slope, intercept) in enumerate(factors):
            frame = rescale(stack[i], slope, intercept)
            if frame.dtype.kind == "f" and out.dtype.kind != "f":
                out = out.astype(np.float64)  # an int32 overflow: float64 after all
            out[i] = frame
        values = out.reshape(stored.shape)
    else:
        values = stored
    scaling = _first(ds.get("DoseGridScaling"))
    if scaling is not None:
        values = values.astype(np.float64)
        values *= scaling
    return compact(values)


def display_for(ds: Dataset) -> Display:
    """VOI LUT, window and polarity for grey images."""
    invert = str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    source: Dataset = ds
    if "WindowCenter" not in ds and "VOILUTSequence" not in ds:
        source = _group_item(ds, "FrameVOILUTSequence", 0) or ds
    table = None
    if "VOILUTSequence" in source and len(source.VOILUTSequence):
        table = _voi_table(source.VOILUTSequence[0], little_endian=_is_little_endian(ds))
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


def _is_little_endian(ds: Dataset) -> bool:
    """The byte order the data set was read in (its transfer syntax's), little endian if unknown."""
    ts = transfer_syntax(ds)
    if ts is not None and ts.is_transfer_syntax:
        return bool(ts.is_little_endian)
    encoding = getattr(ds, "original_encoding", (None, None))
    return encoding[1] is not False


def _voi_table(item: Dataset, little_endian: bool = True) -> VoiTable | None:
    """LUT Data as numbers: US values arrive decoded; OW arrives as bytes in the file's byte order."""
    try:
        n, first, bits = (int(v) for v in item.LUTDescriptor)
        raw = item.LUTData
    except (AttributeError, TypeError, ValueError):
        return None
    n = n or 65536
    if isinstance(raw, bytes):
        if bits <= 8 and len(raw) == n:
            table = np.frombuffer(raw, dtype=np.uint8)
        else:
            table = np.frombuffer(raw, dtype="<u2" if little_endian else ">u2")
    else:
        table = np.asarray(raw if isinstance(raw, list | tuple | pydicom.multival.MultiValue) else [raw])
    if table.size < n or bits < 1:
        return None
    return VoiTable(first_mapped=float(first), table=table[:n].astype(np.float32), bits=bits)


def to_rgb8(values: np.ndarray, bits: int) -> np.ndarray:
    """Colour samples of ``bits`` significant bits as 8-bit: their 8 most significant bits, whatever
    the depth (16-bit palettes by their high byte, 32-bit RGB by its top byte)."""
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind not in "iu":
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    bits = max(int(bits), 1)
    values = np.clip(values, 0, None).astype(np.uint64 if bits > 32 else np.uint32, copy=False)
    if bits > 8:
        values = values >> (bits - 8)
    elif bits < 8:
        values = values << (8 - bits)
    return np.minimum(values, 255).astype(np.uint8)



# -- data set to image -----------------------------------------------------------------------------


def dataset_to_image(ds: Dataset) -> Image:
    """Decode one data set: a 2D image; with several frames, a volume when the frames are positions
    in space (see ``frame_layout``), else a 2D time series."""
    stored, decoder = decode_pixels_noting(ds)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    frames = frame_count(ds)
    meta = describe(ds)
    meta["decoder"] = decoder
    if photometric == "PALETTE COLOR":
        try:
            stored = apply_color_lut(stored, ds)
        except Exception as exc:
            raise ImagingError(f"DICOM palette could not be applied: {exc}") from None
        values, samples, display = to_rgb8(stored, 16 if stored.dtype == np.uint16 else 8), "RGB", None
    elif stored.ndim == (4 if frames > 1 else 3):
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
        values, samples, display = to_rgb8(stored[..., :3], bits), "RGB", None
    else:
        values, samples = real_values(stored, ds), "L"
        display = with_data_window(display_for(ds), values)
    display = display or Display(native=True)

    layout = frame_layout(ds, frames) if frames > 1 else None
    if layout is None or isinstance(layout, Frames):
        spacing = _pixel_spacing(ds)
        if isinstance(layout, Frames):
            # (frame, row, column[, sample]) -> (row, column, frame[, sample])
            values = np.ascontiguousarray(np.moveaxis(values, 0, 2))
            meta.update(frame_axis=layout.reason)
            if layout.interval_ms is not None:
                meta["frame_time_ms"] = layout.interval_ms
        return Image(
            data=values,
            kind="2d",
            spacing=tuple(spacing[:2]) if spacing else None,
            samples=samples,
            display=display,
            metadata=meta,
            frames=layout,
        )
    order, affine, notes = layout
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


def _pixel_spacing(ds: Dataset) -> list[float] | None:
    measures = _group_item(ds, "PixelMeasuresSequence", 0)
    for source in (measures, ds):
        if source is None:
            continue
        spacing = _floats(source.get("PixelSpacing"))
        if spacing and len(spacing) >= 2:
            return spacing
    spacing = _floats(ds.get("ImagerPixelSpacing"))
    return spacing if spacing and len(spacing) >= 2 else None


def frame_layout(
    ds: Dataset, frames: int
) -> Frames | tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """What the frames of a multi-frame data set are: positions in space (frame order, voxel-to-RAS
    affine, notes) or a time series (``Frames``).

    Space only when the geometry says so: per-frame positions that differ (enhanced multi-frame
    functional groups, RT dose grid offsets), a Frame Increment Pointer to a spatial vector, or,
    without positions or pointer, a Spacing Between Slices (legacy multi-frame MR/CT volumes).
    Frames that share one position, a pointer to Frame Time (cine), or no geometry at all are time.
    """
    plane = _group_item(ds, "PlaneOrientationSequence", 0)
    orientation = _floats((plane if plane is not None else ds).get("ImageOrientationPatient"))
    if orientation is not None and len(orientation) != 6:
        orientation = None
    positions = _frame_positions(ds, frames, orientation)
    interval = _first(ds.get("FrameTime"))
    if positions is not None:
        if np.ptp(positions, axis=0).max() < 1e-3:
            return Frames(interval_ms=interval, reason="time: every frame has the same position")
        return _frame_geometry(ds, frames, orientation, positions)
    pointers = ds.get("FrameIncrementPointer")
    if pointers is not None:
        multiple = isinstance(pointers, list | pydicom.multival.MultiValue)
        tags = [Tag(t) for t in (pointers if multiple else [pointers])]
        if not any(t in _SPATIAL_POINTERS for t in tags):
            names = ", ".join(pydicom.datadict.keyword_for_tag(t) or str(t) for t in tags)
            return Frames(interval_ms=interval, reason=f"time: frames follow {names}")
        return _frame_geometry(ds, frames, orientation, None)
    if _first(ds.get("SpacingBetweenSlices")):
        return _frame_geometry(ds, frames, orientation, None)
    return Frames(interval_ms=interval, reason="time: no per-frame positions")


def _frame_geometry(
    ds: Dataset, frames: int, orientation: list[float] | None, positions: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Frame order and voxel-to-RAS affine of frames that are positions in space."""
    notes: dict[str, Any] = {}
    measures = _group_item(ds, "PixelMeasuresSequence", 0)
    source = measures if measures is not None else ds
    pixel_spacing = _floats(source.get("PixelSpacing")) or _floats(ds.get("PixelSpacing"))
    if not pixel_spacing or len(pixel_spacing) < 2:
        pixel_spacing = [1.0, 1.0]
        notes["spacing_assumed"] = True
    step = _first(source.get("SpacingBetweenSlices")) or _first(source.get("SliceThickness"))
    if not step:
        step = _first(ds.get("SpacingBetweenSlices")) or _first(ds.get("SliceThickness")) or 1.0
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


# Positions may stray from a regular grid by this fraction of the step (at least by the absolute
# floor, in mm) before the series counts as irregular: DICOM stores positions as decimal strings.
SLICE_POSITION_TOLERANCE = 0.05
SLICE_POSITION_FLOOR_MM = 0.01


def stack_geometry(
    orientation: list[float] | None,
    positions: np.ndarray | None,
    pixel_spacing: list[float],
    default_step: float,
    count: int,
    notes: dict[str, Any] | None = None,
    labels: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Order ``count`` slices along their normal and build the affine; without positions keep
    their order and step ``default_step`` mm along the normal.

    Slices must lie on a regular grid: a missing slice or an irregular step is refused with the
    gap named (``labels`` name the slices in that message), never stacked with an average step.
    """
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
    check_regular(distances, [labels[i] for i in order] if labels else None)
    step = (positions[order[-1]] - positions[order[0]]) / (count - 1)
    affine = geometry.dicom_affine(orientation, positions[order[0]], pixel_spacing, step)
    return order, affine, notes


def check_regular(distances: np.ndarray, labels: list[str] | None = None) -> None:
    """Refuse sorted slice distances (mm along the normal) that are not evenly spaced."""
    count = len(distances)
    step = (distances[-1] - distances[0]) / (count - 1)
    regular = distances[0] + step * np.arange(count)
    tolerance = max(SLICE_POSITION_TOLERANCE * step, SLICE_POSITION_FLOOR_MM)
    if np.max(np.abs(distances - regular)) <= tolerance:
        return
    gaps = np.diff(distances)
    usual = float(np.median(gaps))
    k = int(np.argmax(np.abs(gaps - usual)))
    names = labels or [f"slice {i + 1}" for i in range(count)]
    missing = round(gaps[k] / usual) - 1 if usual > 0 else 0
    hint = f" ({missing} slice(s) missing?)" if missing >= 1 else ""
    raise ImagingError(
        f"Slice spacing is irregular: between {names[k]} and {names[k + 1]} (at {distances[k]:.3f} and "
        f"{distances[k + 1]:.3f} mm along the slice normal) the gap is {gaps[k]:.3f} mm where the "
        f"series' usual step is {usual:.3f} mm{hint}. A volume with one step would misplace slices, "
        "so the series is refused: send the complete series, or its regular part on its own"
    )
