"""A ZIP of DICOM files: its series listed, each read as one volume (or 2D image), in memory with
limits against zip bombs."""

from __future__ import annotations

import io
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.common.sniff import is_dicom

from . import geometry, io_dicom, limits
from .errors import ImagingError
from .image import Frames, Image

MAX_MEMBERS = 5000
MAX_TOTAL_BYTES = 2 * 1024**3
# Slices whose direction cosines differ by at most this much (each of the six) share one orientation:
# scanners round them differently from slice to slice (1e-4 turns a 500 mm field by under 0.05 mm).
ORIENTATION_TOLERANCE = 1e-4


@dataclass
class _Slice:
    name: str
    series_uid: str
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    instance: int
    facts: dict[str, Any]
    series_number: int | None = None


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a ZIP, as listed before any pixel is decoded."""

    index: int  # position in ``list_series`` order
    series_instance_uid: str
    series_number: int | None
    series_description: str | None
    modality: str | None
    slices: int

    def as_dict(self) -> dict[str, Any]:
        facts = {
            "index": self.index,
            "series_instance_uid": self.series_instance_uid or None,
            "series_number": self.series_number,
            "series_description": self.series_description,
            "modality": self.modality,
            "slices": self.slices,
        }
        return {k: v for k, v in facts.items() if v is not None}


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

    def __init__(self, zf: zipfile.ZipFile, keep_bytes: bool = True) -> None:
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
            if keep_bytes and cached + len(data) <= self.CACHE_BYTES:
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
    try:
        series_number: int | None = int(ds.get("SeriesNumber"))
    except (TypeError, ValueError):
        series_number = None
    facts = io_dicom.describe(ds)
    return _Slice(
        name=name,
        series_uid=str(ds.get("SeriesInstanceUID") or ""),
        position=tuple(position) if position and len(position) == 3 else None,
        orientation=tuple(orientation) if orientation and len(orientation) == 6 else None,
        instance=instance,
        facts=facts,
        series_number=series_number,
    )


def _series(slices: list[_Slice]) -> list[list[_Slice]]:
    """Slices grouped by SeriesInstanceUID, largest series first."""
    return sorted(_grouped(slices), key=len, reverse=True)


def _grouped(slices: list[_Slice]) -> list[list[_Slice]]:
    """Slices grouped by SeriesInstanceUID, in listing order: series number, then UID."""
    groups: dict[str, list[_Slice]] = defaultdict(list)
    for s in slices:
        groups[s.series_uid].append(s)
    return sorted(
        groups.values(),
        key=lambda g: (g[0].series_number is None, g[0].series_number or 0, g[0].series_uid),
    )


def _info(index: int, series: list[_Slice]) -> SeriesInfo:
    first = series[0]
    return SeriesInfo(
        index=index,
        series_instance_uid=first.series_uid,
        series_number=first.series_number,
        series_description=first.facts.get("series_description"),
        modality=first.facts.get("modality"),
        slices=len(series),
    )


def list_series(path: Path) -> list[SeriesInfo]:
    """Every series of the ZIP (grouped by Series Instance UID), ordered by series number then UID,
    from the headers alone."""
    with _open(path) as zf:
        archive = _Archive(zf, keep_bytes=False)
    return [_info(i, g) for i, g in enumerate(_grouped(archive.slices))]


def read_series(path: Path, series_instance_uid: str) -> Image:
    """One series of the ZIP, by its Series Instance UID (as ``list_series`` gives it)."""
    with _open(path) as zf:
        archive = _Archive(zf)
        groups = _grouped(archive.slices)
        group = _find(archive, series_instance_uid)
        index = next(i for i, g in enumerate(groups) if g[0].series_uid == series_instance_uid)
        try:
            return _read_group(archive, group, _series_meta(archive, groups, index, group))
        except ImagingError as exc:
            raise ImagingError(f"Series {_label(_info(index, group))}: {exc}") from None


def read_every_series(path: Path) -> Iterator[tuple[SeriesInfo, Image]]:
    """Every series of the ZIP, one at a time (each decoded only when reached), in ``list_series``
    order. A series that cannot be read raises ImagingError naming it."""
    with _open(path) as zf:
        archive = _Archive(zf)
        groups = _grouped(archive.slices)
        for index, group in enumerate(groups):
            info = _info(index, group)
            try:
                image = _read_group(archive, group, _series_meta(archive, groups, index, group))
            except ImagingError as exc:
                raise ImagingError(f"Series {_label(info)}: {exc}") from None
            yield info, image


def series_header(path: Path, series_instance_uid: str | None = None) -> Any:
    """The header (no pixel data) of the first instance of one series of the ZIP: the one with that
    Series Instance UID, or without one the series ``read_dicom_zip`` reads (the largest)."""
    with _open(path) as zf:
        archive = _Archive(zf, keep_bytes=False)
        group = _find(archive, series_instance_uid) if series_instance_uid else _series(archive.slices)[0]
        first = min(group, key=lambda s: (s.instance, s.name))
        data = _read_member(zf, zf.getinfo(first.name))
        return io_dicom.read_dataset(io.BytesIO(data), stop_before_pixels=True)


def _find(archive: _Archive, series_instance_uid: str) -> list[_Slice]:
    for group in _grouped(archive.slices):
        if group[0].series_uid == series_instance_uid:
            return group
    raise ImagingError(f"The ZIP has no series with Series Instance UID {series_instance_uid!r}")


def anonymize_zip(
    path: Path, target: Path, transform: Callable[[Any], Any], series_instance_uid: str | None = None
) -> tuple[int, list[Any]]:
    """Every DICOM image of the ZIP (or of one series) passed through ``transform`` (a data set,
    changed in place, to a report) and written to the ZIP ``target`` as ``0001.dcm`` upwards, in
    series then instance order: member names may carry names of patients, so none is kept, and
    files that are not DICOM images (DICOMDIR, notes) are left out. Returns (files written,
    reports)."""
    with _open(path) as zf:
        archive = _Archive(zf, keep_bytes=False)
        groups = [_find(archive, series_instance_uid)] if series_instance_uid else _grouped(archive.slices)
        members = [s.name for g in groups for s in sorted(g, key=lambda s: (s.instance, s.name))]
        width = max(4, len(str(len(members))))
        reports = []
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
            for k, name in enumerate(members, start=1):
                ds = io_dicom.read_dataset(io.BytesIO(_read_member(zf, zf.getinfo(name))))
                reports.append(transform(ds))
                buffer = io.BytesIO()  # pydicom seeks while writing: a ZIP member stream cannot
                meta = getattr(ds, "file_meta", None)
                ds.save_as(buffer, enforce_file_format=meta is not None and "TransferSyntaxUID" in meta)
                out.writestr(f"{k:0{width}d}.dcm", buffer.getvalue())
    return len(members), reports


def _label(info: SeriesInfo) -> str:
    words = [str(info.series_number)] if info.series_number is not None else []
    if info.series_description:
        words.append(repr(info.series_description))
    return " ".join(words) or repr(info.series_instance_uid)


def _series_meta(
    archive: _Archive, groups: list[list[_Slice]], index: int, group: list[_Slice]
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "format": "zip",
        "slices": len(group),
        "series_count": len(groups),
        "series_index": index,
        "skipped_files": archive.skipped,
    }
    if group[0].series_number is not None:
        meta["series_number"] = group[0].series_number
    return meta


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
    """Facts of the largest series, and with several series every series listed (``series``, in
    ``list_series`` order): each may be read (and judged too large) on its own."""
    with _open(path) as zf:
        archive = _Archive(zf, keep_bytes=False)
        groups = _series(archive.slices)
        chosen = groups[0]
        if len(groups) == 1:
            _check_size(chosen)
        meta = dict(chosen[0].facts)
        frames = int(meta.get("frames") or 1)
        if len(chosen) == 1 and frames > 1:  # one multi-frame file: a volume, or frames in time
            layout = io_dicom.frame_layout(archive.dataset(chosen[0].name), frames)
            if isinstance(layout, Frames):
                meta["frame_axis"] = layout.reason
    meta.update(format="zip", slices=len(chosen), series_count=len(groups), skipped_files=archive.skipped)
    if len(groups) > 1:
        meta["other_series"] = [_series_summary(g) for g in groups[1:]]
        meta["series"] = [_info(i, g).as_dict() for i, g in enumerate(_grouped(archive.slices))]
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
            series_meta["warnings"] = [
                f"The ZIP holds {len(groups)} series; this result is of the largest "
                f"({len(chosen)} images). The others are listed in other_series: submit the ZIP "
                "again to have each series processed as a task of its own."
            ]
        return _read_group(archive, chosen, series_meta)


def _read_group(archive: _Archive, chosen: list[_Slice], series_meta: dict[str, Any]) -> Image:
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
    samples = int(facts.get("samples_per_pixel") or 1)
    bits = int(facts.get("bits_allocated") or 16)
    limits.check_memory("DICOM series", rows * columns * len(series) * samples, bits / 8,
                        "2d" if len(series) == 1 else "volume")


def _stack(archive: _Archive, chosen: list[_Slice], series_meta: dict[str, Any]) -> Image:
    orientation = _common_orientation(chosen)
    if all(s.position is not None for s in chosen):
        positions = np.asarray([s.position for s in chosen], float)
    else:  # no geometry: instance order, thickness as the step
        chosen = sorted(chosen, key=lambda s: s.instance)
        positions = None
        series_meta["sorted_by"] = "instance_number"
    first = chosen[0].facts
    pixel_spacing = first.get("pixel_spacing") or [1.0, 1.0]
    step = first.get("slice_thickness") or 1.0
    labels = [_base_name(s.name) for s in chosen]
    order, affine, notes = io_dicom.stack_geometry(
        list(orientation) if orientation else None, positions, pixel_spacing, step, len(chosen), labels=labels
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
        needed = np.result_type(volume.dtype, _slice_dtype(values))
        if needed != volume.dtype:
            volume = volume.astype(needed)
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


def _base_name(member: str) -> str:
    return repr(member.rstrip("/").rsplit("/", 1)[-1])


def _common_orientation(chosen: list[_Slice]) -> tuple[float, ...] | None:
    """The slices' one orientation: equal within ORIENTATION_TOLERANCE counts as equal (the first
    slice's is used); otherwise the series is refused."""
    orientations = [s.orientation for s in chosen]
    if all(o is None for o in orientations):
        return None
    if any(o is None for o in orientations):
        raise ImagingError("Some slices of the series have no orientation; cannot build one volume")
    values = np.asarray(orientations, float)
    spread = float(np.max(np.abs(values - values[0])))
    if spread > ORIENTATION_TOLERANCE:
        raise ImagingError(
            f"The series mixes slice orientations (direction cosines differ by up to {spread:.4g}, "
            f"more than {ORIENTATION_TOLERANCE}); cannot build one volume"
        )
    return orientations[0]


def _slice_dtype(values: np.ndarray) -> np.dtype:
    """The type a volume needs to hold one slice's real values exactly: int16 (CT in HU) while the
    values fit, int32 for other whole numbers, else their own float type."""
    if values.dtype.kind not in "iu":
        return values.dtype
    if values.size == 0 or (values.min() >= -32768 and values.max() <= 32767):
        return np.dtype(np.int16)
    return np.dtype(np.int32) if values.dtype.itemsize <= 4 or values.max() < 2**31 else np.dtype(np.float64)
