"""Writing results: display PNG/JPEG for 2D, .nii.gz plus axial, coronal and sagittal PNG previews
for volumes, NIfTI x, y, 1, t plus a preview for time series of 2D frames, DICOM (a derived
instance, or a new series in a ZIP) on request; and, for inputs that a browser cannot show (DICOM,
DICOM-series ZIP), the input itself in a viewable form."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from services.common.keys import output_name

from . import display, geometry, io_dicom_write, io_nifti, io_raster, views
from .image import Image

MEDIA_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "nifti": "application/gzip",
    "dicom": "application/dicom",
    "zip": "application/zip",
}

# Input formats a browser (or NiiVue) cannot show: their tasks also get a role "input" output.
NEEDS_INPUT_VIEW = frozenset({"dicom", "zip"})
# Output file kinds (services.common.keys) of each plane's preview, by raster format.
_PREVIEW_KINDS = {
    "png": {"axial": "preview_png", "coronal": "preview_coronal_png", "sagittal": "preview_sagittal_png"},
    "jpeg": {"coronal": "preview_coronal_jpeg", "sagittal": "preview_sagittal_jpeg"},
}


@dataclass(frozen=True)
class DicomTarget:
    """What a DICOM result is derived from: the input's header (the first instance of its series
    for a ZIP; None for a non-DICOM input: a new patient and study), the operation and its params
    (DerivationDescription), and whether a 2D result lies on the input's plane."""

    header: Dataset | None
    operation: str
    params: dict[str, Any] = field(default_factory=dict)
    keep_plane: bool = True


def display_array(image: Image) -> tuple[np.ndarray, str]:
    """A 2D image as display values (uint8, or uint16 grey for 16-bit sources) and its samples."""
    if image.display.native:
        return image.data, image.samples
    return display.to_display_uint8(image.data, image.display), "L"


def _display_plane(image: Image, values: np.ndarray) -> np.ndarray:
    """A volume's plane as 8-bit display values (colour kept)."""
    if image.has_samples:
        return display.to_uint8_native(values)
    return display.to_display_uint8(values, image.display, fallback_pct=(0.5, 99.5))


def preview_array(image: Image, plane: views.Plane = "axial") -> tuple[np.ndarray, str]:
    """The middle slice of a volume in one patient plane, shown the radiological way with square
    pixels, 8-bit; for a time series, its middle frame as a 2D image."""
    if image.frames is not None:
        values, samples = display_array(image.frame(image.frame_count // 2))
        return display.to_uint8_native(values), samples
    plane_values, (row_mm, column_mm) = views.middle_plane(image, plane)
    grey = _display_plane(image, plane_values)
    square, _ = views.square_pixels(grey.astype(np.float32), row_mm, column_mm)
    return display.to_uint8_native(square), image.samples if image.has_samples else "L"


def _entry(path: Path, media_type: str, role: str) -> dict[str, str]:
    return {"filename": path.name, "path": str(path), "media_type": media_type, "role": role}


def write_outputs(
    image: Image,
    out_dir: Path,
    stem: str,
    output_format: str = "png",
    source: Image | None = None,
    dicom: DicomTarget | None = None,
    volume_as_images: bool = False,
) -> list[dict[str, str]]:
    """Write the result files; the primary output comes first.

    ``output_format``: "png" or "jpeg" (2D results; volumes are .nii.gz with previews unless
    ``volume_as_images``: then their three planes are the images), "nifti", or "dicom" (with
    ``dicom``). With ``source`` (the decoded input) of a format a browser cannot show, the input
    view (see ``write_input_view``) comes last.
    """
    out_dir = Path(out_dir)
    if output_format == "dicom":
        if dicom is None:
            raise ValueError("a DICOM result needs a DicomTarget")
        written = _write_dicom(image, out_dir, stem, dicom)
    elif output_format == "nifti":
        written = _write_nifti(image, out_dir, stem)
    elif image.kind == "volume" and volume_as_images:
        written = _write_planes(image, out_dir, stem, output_format)
    else:
        written = _write_result(image, out_dir, stem, output_format)
    if source is not None and source.metadata.get("format") in NEEDS_INPUT_VIEW:
        written.append(write_input_view(source, out_dir, stem, result=image))
        for shown, kind, role in (
            (image, "values_nifti", "values"),
            (source, "input_values_nifti", "input_values"),
        ):
            if has_real_values(shown):
                written.append(write_values(shown, out_dir / output_name(stem, kind), role))
    return written


def has_real_values(image: Image) -> bool:
    """A single grey 2D image in real units (HU, ...), which a PNG shows only through one window."""
    return image.kind == "2d" and image.samples == "L" and not image.display.native and image.data.ndim == 2


def write_values(image: Image, path: Path, role: str) -> dict[str, str]:
    """A 2D image's real values as a float32 NIfTI of one slice (column, row, 1), so that a viewer
    can window it: the affine places it in the patient (the DICOM position and orientation when
    known, else only the pixel spacing); without a pixel spacing the spatial unit is "unknown"."""
    meta = image.metadata
    spacing = image.spacing
    affine = geometry.dicom_affine(
        meta.get("image_orientation_patient"), meta.get("image_position_patient"), spacing or (1.0, 1.0), 1.0
    )
    units = {} if spacing else {"xyzt_units": ("unknown", "unknown")}
    plane = Image(
        data=np.ascontiguousarray(image.data.T[:, :, None]), kind="volume", affine=affine, metadata=units
    )
    io_nifti.write_nifti(plane, path, dtype=np.float32)
    return _entry(path, MEDIA_TYPES["nifti"], role)


def write_input_view(source: Image, out_dir: Path, stem: str, result: Image | None = None) -> dict[str, str]:
    """The unprocessed input, role "input", for before/after comparison in the browser.

    2D: ``{stem}_input.png`` rendered exactly like the processed PNG (the same VOI LUT / window /
    MONOCHROME1 inversion, taken from the result when both are grey real values), so that before
    and after share one grey scale. Volume: ``{stem}_input.nii.gz`` in real units with the input's
    own affine (the processed volume's, unless the operation resampled it), so that a viewer can
    overlay the result on it.
    """
    out_dir = Path(out_dir)
    if source.kind == "2d" and source.frames is None:
        shown = source
        if (
            result is not None
            and result.kind == "2d"
            and not result.display.native
            and not source.display.native
            and source.samples == result.samples == "L"
        ):
            shown = replace(source, display=result.display)
        values, samples = display_array(shown)
        path = out_dir / output_name(stem, "input_png")
        io_raster.write_png(values, samples, path)
        return _entry(path, MEDIA_TYPES["png"], "input")
    path = out_dir / output_name(stem, "input_nifti")
    io_nifti.write_nifti(source, path)
    return _entry(path, MEDIA_TYPES["nifti"], "input")


def _write_raster(values: np.ndarray, samples: str, path: Path, fmt: str) -> None:
    if fmt == "jpeg":
        io_raster.write_jpeg(values, samples, path)
    else:
        io_raster.write_png(values, samples, path)


def _write_result(image: Image, out_dir: Path, stem: str, output_format: str) -> list[dict[str, str]]:
    if image.kind == "2d" and image.frames is None:
        values, samples = display_array(image)
        kind = "processed_jpeg" if output_format == "jpeg" else "processed_png"
        path = out_dir / output_name(stem, kind)
        _write_raster(values, samples, path, output_format)
        return [_entry(path, MEDIA_TYPES[output_format], "primary")]
    volume_path = out_dir / output_name(stem, "processed_nifti")
    dtype = np.float32 if image.data.dtype.kind == "f" else None
    io_nifti.write_nifti(image, volume_path, dtype=dtype)
    return [_entry(volume_path, MEDIA_TYPES["nifti"], "primary"), *_write_previews(image, out_dir, stem)]


def _write_previews(image: Image, out_dir: Path, stem: str) -> list[dict[str, str]]:
    """Axial, coronal and sagittal PNGs of a volume's middle slices (one PNG of a time series'
    middle frame), role "preview", axial first."""
    planes = ("axial",) if image.frames is not None else views.PLANES
    written = []
    for plane in planes:
        values, samples = preview_array(image, plane)
        path = out_dir / output_name(stem, _PREVIEW_KINDS["png"][plane])
        io_raster.write_png(values, samples, path)
        written.append(_entry(path, MEDIA_TYPES["png"], "preview"))
    return written


def _write_planes(image: Image, out_dir: Path, stem: str, fmt: str) -> list[dict[str, str]]:
    """A volume as images of its three middle planes: axial primary, coronal and sagittal previews."""
    written = []
    for plane in views.PLANES:
        values, samples = preview_array(image, plane)
        if plane == "axial":
            kind = "processed_jpeg" if fmt == "jpeg" else "processed_png"
        else:
            kind = _PREVIEW_KINDS["jpeg" if fmt == "jpeg" else "png"][plane]
        path = out_dir / output_name(stem, kind)
        _write_raster(values, samples, path, fmt)
        written.append(_entry(path, MEDIA_TYPES[fmt], "primary" if plane == "axial" else "preview"))
    return written


def nifti_of_2d(image: Image) -> Image:
    """A 2D image as a one-slice volume (column, row, 1[, samples]) at its pixel spacing, in the
    plane of a DICOM image without patient geometry (rows down, columns right)."""
    data = np.swapaxes(image.data, 0, 1)[:, :, np.newaxis]
    affine = geometry.dicom_affine(None, None, image.spacing or (1.0, 1.0), 1.0)
    return replace(image, data=np.ascontiguousarray(data), kind="volume", affine=affine, nifti_forms=None)


def _write_nifti(image: Image, out_dir: Path, stem: str) -> list[dict[str, str]]:
    """Real values exactly as they are (no cast: int16 stays int16, float64 stays float64)."""
    path = out_dir / output_name(stem, "processed_nifti")
    if image.kind == "2d" and image.frames is None:
        io_nifti.write_nifti(nifti_of_2d(image), path)
        values, samples = display_array(image)
        preview = out_dir / output_name(stem, "preview_png")
        io_raster.write_png(values, samples, preview)
        return [_entry(path, MEDIA_TYPES["nifti"], "primary"), _entry(preview, MEDIA_TYPES["png"], "preview")]
    io_nifti.write_nifti(image, path)
    return [_entry(path, MEDIA_TYPES["nifti"], "primary"), *_write_previews(image, out_dir, stem)]


def _write_dicom(image: Image, out_dir: Path, stem: str, target: DicomTarget) -> list[dict[str, str]]:
    """The result as DICOM, primary, then what a browser can show of it, role "preview"."""
    header = target.header if target.header is not None else Dataset()
    common = {"operation": target.operation, "params": target.params}
    if image.kind == "volume":
        path = out_dir / output_name(stem, "processed_zip")
        io_dicom_write.write_volume_series(image, path, source=target.header, **common)
        shown = _write_result(image, out_dir, stem, "png")
        for entry in shown:
            entry["role"] = "preview"
        return [_entry(path, MEDIA_TYPES["zip"], "primary"), *shown]
    path = out_dir / output_name(stem, "processed_dicom")
    if image.frames is not None:
        ds = io_dicom_write.derived_frames(header, image, **common)
        io_dicom_write.write_dataset(ds, path)
        return [_entry(path, MEDIA_TYPES["dicom"], "primary"), *_write_previews(image, out_dir, stem)]
    ds = io_dicom_write.derived_image(header, image, keep_geometry=target.keep_plane, **common)
    io_dicom_write.write_dataset(ds, path)
    values, samples = display_array(image)
    preview = out_dir / output_name(stem, "preview_png")
    io_raster.write_png(values, samples, preview)
    return [_entry(path, MEDIA_TYPES["dicom"], "primary"), _entry(preview, MEDIA_TYPES["png"], "preview")]


def write_views(image: Image, out_dir: Path, stem: str) -> list[dict[str, str]]:
    """What a browser can show of an image, role "preview": a 2D image's PNG, a volume's axial,
    coronal and sagittal PNGs, a time series' middle frame."""
    out_dir = Path(out_dir)
    if image.kind == "2d" and image.frames is None:
        values, samples = display_array(image)
        path = out_dir / output_name(stem, "preview_png")
        io_raster.write_png(values, samples, path)
        return [_entry(path, MEDIA_TYPES["png"], "preview")]
    return _write_previews(image, out_dir, stem)
