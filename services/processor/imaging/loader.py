"""Pick a reader by content and describe files."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.orientations import aff2axcodes
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from services.common import sniff as sniffing

from . import io_dicom, io_nifti, io_raster, io_series, limits
from .errors import ImagingError
from .image import Image

log = logging.getLogger(__name__)

_READERS: dict[str, Callable[[Path], Image]] = {
    sniffing.PNG: lambda p: io_raster.read_raster(p, "png"),
    sniffing.JPEG: lambda p: io_raster.read_raster(p, "jpeg"),
    sniffing.DICOM: io_dicom.read_dicom,
    sniffing.NIFTI: io_nifti.read_nifti,
    sniffing.ZIP: io_series.read_dicom_zip,
}


def detect_format(path: Path) -> str:
    """ "png", "jpeg", "dicom", "nifti" or "zip", from the file's first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(sniffing.SNIFF_BYTES)
    except OSError as exc:
        raise ImagingError(f"File could not be opened: {exc.strerror}") from None
    if not head:
        raise ImagingError("The file is empty")
    fmt = sniffing.sniff(head)
    if fmt is not None:
        return fmt
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return sniffing.ZIP  # let the ZIP reader say what is inside
    if head.startswith(b"\x1f\x8b"):
        raise ImagingError("gzip file is corrupt or does not hold a NIfTI image")
    raise ImagingError(f"Unsupported file type: expected {sniffing.ACCEPTED}")


_FORMAT_NAMES = {
    sniffing.PNG: "PNG",
    sniffing.JPEG: "JPEG",
    sniffing.DICOM: "DICOM",
    sniffing.NIFTI: "NIfTI",
    sniffing.ZIP: "ZIP",
}


def _unreadable(fmt: str, error: Exception, path: Path) -> ImagingError:
    """A reader's unexpected exception as the file's fault: decoding a given file is deterministic.
    Logged with its traceback, in case it is a bug in a reader after all."""
    log.warning("unexpected %s while reading a %s file", type(error).__name__, fmt, exc_info=error)
    reason = str(error).replace(str(path), "the file").strip() or type(error).__name__
    if len(reason) > 200:
        reason = reason[:197] + "..."
    return ImagingError(f"{_FORMAT_NAMES.get(fmt, fmt)} file could not be read: {reason}")


def load(path: Path | str, series_instance_uid: str | None = None) -> Image:
    """Read any supported file into an Image (real units for DICOM and NIfTI). For a ZIP of DICOM
    files, ``series_instance_uid`` picks the series (without it: the largest one)."""
    path = Path(path)
    fmt = detect_format(path)
    try:
        if series_instance_uid and fmt == sniffing.ZIP:
            image = io_series.read_series(path, series_instance_uid)
        else:
            image = _READERS[fmt](path)
    except (ImagingError, MemoryError):
        raise
    except Exception as exc:
        raise _unreadable(fmt, exc, path) from exc
    image.metadata.setdefault("format", fmt)
    if image.kind == "volume" and image.affine is not None:
        # the voxel axes' patient directions (RAS+ letters, nibabel's aff2axcodes), for every volume
        # as NIfTI's reader notes them: "LPS" for a DICOM series stored the usual way
        image.metadata.setdefault("orientation", "".join(aff2axcodes(image.affine)))
    return image


def dicom_header(path: Path | str, series_instance_uid: str | None = None) -> Any:
    """The DICOM header (no pixel data) a derived result is made from: the file's own, or for a
    ZIP the first instance of the series that ``load`` reads; None for other formats."""
    path = Path(path)
    fmt = detect_format(path)
    try:
        if fmt == sniffing.DICOM:
            return io_dicom.read_dataset(path, stop_before_pixels=True)
        if fmt == sniffing.ZIP:
            return io_series.series_header(path, series_instance_uid)
    except (ImagingError, MemoryError):
        raise
    except Exception as exc:
        raise _unreadable(fmt, exc, path) from exc
    return None


def inspect(path: Path | str) -> tuple[str, dict[str, Any]]:
    """(format, JSON-serialisable facts) without decoding more than needed."""
    path = Path(path)
    fmt = detect_format(path)
    try:
        return fmt, jsonable(_inspect(path, fmt))
    except (ImagingError, MemoryError):
        raise
    except Exception as exc:
        raise _unreadable(fmt, exc, path) from exc


def _inspect(path: Path, fmt: str) -> dict[str, Any]:
    if fmt in (sniffing.PNG, sniffing.JPEG):
        meta = _inspect_raster(path, fmt)
    elif fmt == sniffing.DICOM:
        meta = io_dicom.inspect_dicom(path)
        frames = meta.get("frames", 1)
        rows, columns = meta.get("rows"), meta.get("columns")
        if frames > 1 and "frame_axis" not in meta:
            meta["kind"], meta["shape"] = "volume", [columns, rows, frames]
        else:  # a 2D image, or a time series of 2D frames
            meta["kind"] = "2d"
            meta["shape"] = [rows, columns, frames] if frames > 1 else [rows, columns]
    elif fmt == sniffing.NIFTI:
        meta = io_nifti.inspect_nifti(path)
        meta["kind"] = "volume"
    else:
        meta = io_series.inspect_zip(path)
        one_volume = meta.get("frames", 1) > 1 and "frame_axis" not in meta  # a multi-frame volume file
        meta["kind"] = "volume" if meta.get("slices", 0) > 1 or one_volume else "2d"
    return meta


def _inspect_raster(path: Path, fmt: str) -> dict[str, Any]:
    name = fmt.upper()
    try:
        with PILImage.open(path) as pil:
            width, height, mode = pil.width, pil.height, pil.mode
            if width * height > (PILImage.MAX_IMAGE_PIXELS or float("inf")):
                raise ImagingError(f"{name} image is too large to process: {width}x{height} pixels")
            limits.check_image_size(f"{name} image", height, width)
    except UnidentifiedImageError:
        raise ImagingError(f"{name} file could not be decoded: it is not a valid {name} image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImagingError(f"{name} file is truncated or corrupt: {exc}") from None
    return {
        "format": fmt,
        "kind": "2d",
        "source_mode": mode,
        "shape": [height, width],
        "width": width,
        "height": height,
    }


def summary(image: Image) -> dict[str, Any]:
    """Shape and geometry facts of an in-memory image."""
    facts: dict[str, Any] = {
        "kind": image.kind,
        "shape": list(image.data.shape),
        "dtype": str(image.data.dtype),
        "samples": image.samples,
    }
    if image.spacing is not None:
        facts["spacing"] = [round(float(s), 6) for s in image.spacing]
    if image.affine is not None:
        facts["affine"] = [[round(float(v), 6) for v in row] for row in image.affine]
    return facts


def jsonable(value: Any) -> Any:
    """Plain JSON types only: numpy scalars, tuples and pydicom values converted, NaN/inf dropped."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items() if jsonable(v) is not None}
    if isinstance(value, list | tuple) or (
        hasattr(value, "__iter__") and type(value).__name__ == "MultiValue"
    ):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)
