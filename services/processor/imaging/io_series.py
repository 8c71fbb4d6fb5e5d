"""A ZIP of DICOM files as one series volume, read in memory with limits against zip bombs."""

from __future__ import annotations

import io
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.common.sniff import is_dicom

from . import geometry, io_dicom, limits
from .errors import ImagingError
from .image import Image

MAX_MEMBERS = 5000
MAX_TOTAL_BYTES = 2 * 1024**3


@dataclass
class _Slice:
    name: str
    series_uid: str
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    instance: int
    facts: dict[str, Any]


def _members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ImagingError(f"ZIP has too many files: {len(infos)} (at most {MAX_MEMBERS})")
    chosen = []
    total = 0
    for info in infos:
        base = info.filename.rstrip("/").rsplit("/", 1)[-1]
        if (
            info.is_dir()
            or info.filename.startswith("__MACOSX")
            or base.startswith(".")
            or base.upper() == "DICOMDIR"
        ):
            continue
        if info.flag_bits & 0x1:
            raise ImagingError(f"ZIP member {base!r} is encrypted")
        limits.check_inflated_size(f"ZIP member {base!r}", info.file_size, info.compress_size)
        total += info.file_size
        chosen.append(info)
    if total > MAX_TOTAL_BYTES:
        raise ImagingError(
            f"ZIP content is too large: {total} bytes uncompressed (at most {MAX_TOTAL_BYTES})"
        )
    return chosen


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        with zf.open(info) as member:
            data = member.read(info.file_size + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise ImagingError(f"ZIP member {info.filename!r} could not be read: {exc}") from None
    if len(data) > info.file_size:
        raise ImagingError(f"ZIP member {info.filename!r} is larger than it claims")
    return data


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ImagingError(f"ZIP file is corrupt: {exc}") from None


class _Archive:
    """The DICOM images of a ZIP, scanned once; member bytes kept while they fit in a budget."""

    CACHE_BYTES = 256 * 1024**2

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.slices: list[_Slice] = []
        self.skipped = 0
        self._cache: dict[str, bytes] = {}
        cached = 0
        members = _members(zf)
        for info in members:
            data = _read_member(zf, info)
            if not is_dicom(data[:1024]):
                self.skipped += 1
                continue
            ds = io_dicom.read_dataset(io.BytesIO(data), stop_before_pixels=True)
            if "Rows" not in ds or "Columns" not in ds:
                self.skipped += 1  # DICOM but not an image (SR, RT plan, ...)
                continue
            self.slices.append(_slice_of(info.filename, ds))
            if cached + len(data) <= self.CACHE_BYTES:
                self._cache[info.filename] = data
                cached += len(data)
        if not self.slices:
            raise ImagingError(f"ZIP contains no DICOM images ({len(members)} file(s) checked)")

    def dataset(self, name: str) -> Any:
        data = self._cache.pop(name, None)
        if data is None:
            data = _read_member(self.zf, self.zf.getinfo(name))
        return io_dicom.read_dataset(io.BytesIO(data))


def _slice_of(name: str, ds: Any) -> _Slice:
    position = io_dicom._floats(ds.get("ImagePositionPatient"))
    orientation = io_dicom._floats(ds.get("ImageOrientationPatient"))
    try:
        instance = int(ds.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        instance = 0
    facts = io_dicom.describe(ds)
    return _Slice(
        name=name,
        series_uid=str(ds.get("SeriesInstanceUID") or ""),
        position=tuple(position) if position and len(position) == 3 else None,
        orientation=tuple(orientation) if orientation and len(orientation) == 6 else None,
        instance=instance,
        facts=facts,
    )


def _series(slices: list[_Slice]) -> list[list[_Slice]]:
    """Slices grouped by SeriesInstanceUID, largest series first."""
    groups: dict[str, list[_Slice]] = defaultdict(list)
    for s in slices:
        groups[s.series_uid].append(s)
    return sorted(groups.values(), key=len, reverse=True)


def _series_summary(series: list[_Slice]) -> dict[str, Any]:
    first = series[0].facts
    summary = {
        "series_instance_uid": series[0].series_uid or None,
        "modality": first.get("modality"),
        "series_description": first.get("series_description"),
        "slices": len(series),
    }
    return {k: v for k, v in summary.items() if v is not None}


def inspect_zip(path: Path) -> dict[str, Any]:
    with _open(path) as zf:
        archive = _Archive(zf)
    groups = _series(archive.slices)
    chosen = groups[0]
    _check_size(chosen)
    meta = dict(chosen[0].facts)
    meta.update(format="zip", slices=len(chosen), series_count=len(groups), skipped_files=archive.skipped)
    if len(groups) > 1:
        meta["other_series"] = [_series_summary(g) for g in groups[1:]]
    return meta


def read_dicom_zip(path: Path) -> Image:
    """The largest series in the archive: a volume sorted along the slice normal (2D if one slice)."""
    with _open(path) as zf:
        archive = _Archive(zf)
        groups = _series(archive.slices)
        chosen = groups[0]
        series_meta: dict[str, Any] = {
            "format": "zip",
            "slices": len(chosen),
            "series_count": len(groups),
            "skipped_files": archive.skipped,
        }
        if len(groups) > 1:
            series_meta["other_series"] = [_series_summary(g) for g in groups[1:]]
        _check_size(chosen)
        if len(chosen) == 1:
            image = io_dicom.dataset_to_image(archive.dataset(chosen[0].name))
            image.metadata.update(series_meta)
            return image
        return _stack(archive, chosen, series_meta)


def _check_size(series: list[_Slice]) -> None:
    """Refuse a series too large to decode, from its headers alone."""
    facts = series[0].facts
    rows, columns = int(facts.get("rows") or 0), int(facts.get("columns") or 0)
    if len(series) == 1:
        limits.check_image_size("DICOM image", rows, columns)
    else:
        limits.check_volume_size("DICOM series", (columns, rows, len(series)))


def _stack(archive: _Archive, chosen: list[_Slice], series_meta: dict[str, Any]) -> Image:
    orientations = {s.orientation for s in chosen}
    if len(orientations) > 1:
        raise ImagingError("The series mixes slice orientations; cannot build one volume")
    orientation = next(iter(orientations))
    if all(s.position is not None for s in chosen):
        positions = np.asarray([s.position for s in chosen], float)
    else:  # no geometry: instance order, thickness as the step
        chosen = sorted(chosen, key=lambda s: s.instance)
        positions = None
        series_meta["sorted_by"] = "instance_number"
    first = chosen[0].facts
    pixel_spacing = first.get("pixel_spacing") or [1.0, 1.0]
    step = first.get("slice_thickness") or 1.0
    order, affine, notes = io_dicom.stack_geometry(
        list(orientation) if orientation else None, positions, pixel_spacing, step, len(chosen)
    )
    ordered = [chosen[i] for i in order]

    rows, cols = first.get("rows"), first.get("columns")
    volume: np.ndarray | None = None
    display = None
    for k, piece in enumerate(ordered):
        ds = archive.dataset(piece.name)
        if io_dicom.frame_count(ds) != 1:
            raise ImagingError("The series mixes multi-frame files with single slices")
        if (ds.get("Rows"), ds.get("Columns")) != (rows, cols):
            raise ImagingError("The series mixes image sizes; cannot build one volume")
        if ds.get("SamplesPerPixel", 1) != 1:
            raise ImagingError("Colour DICOM series are not supported as volumes")
        values = io_dicom.real_values(io_dicom.decode_pixels(ds), ds)
        if volume is None:  # int16 (CT in HU) until a slice needs more
            volume = np.empty((cols, rows, len(ordered)), dtype=np.int16)
            display = io_dicom.display_for(ds)
        if volume.dtype == np.int16 and not _fits_int16(values):
            volume = volume.astype(np.float32)
        volume[:, :, k] = values.T  # (row, column) -> (column, row)
    assert volume is not None and display is not None
    display = io_dicom.with_data_window(display, volume)
    meta = dict(first)
    meta.update(series_meta)
    meta.update(notes)
    return Image(
        data=volume,
        kind="volume",
        affine=affine,
        spacing=geometry.voxel_sizes(affine),
        display=display,
        metadata=meta,
    )


def _fits_int16(values: np.ndarray) -> bool:
    """Whole numbers that int16 holds exactly."""
    if values.dtype.kind not in "iu":
        return False
    return values.size == 0 or bool(values.min() >= -32768 and values.max() <= 32767)
