"""Writing results: display PNG/JPEG for 2D, .nii.gz plus a PNG preview for volumes and for time
series of 2D frames (x, y, 1, t); and, for inputs that a browser cannot show (DICOM, DICOM-series
ZIP), the input itself in a viewable form."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation, io_orientation

from services.common.keys import output_name

from . import display, geometry, io_nifti, io_raster
from .image import Image

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "nifti": "application/gzip"}

# Input formats a browser (or NiiVue) cannot show: their tasks also get a role "input" output.
NEEDS_INPUT_VIEW = frozenset({"dicom", "zip"})


def display_array(image: Image) -> tuple[np.ndarray, str]:
    """A 2D image as display values (uint8, or uint16 grey for 16-bit sources) and its samples."""
    if image.display.native:
        return image.data, image.samples
    return display.to_display_uint8(image.data, image.display), "L"


def preview_array(image: Image) -> tuple[np.ndarray, str]:
    """Middle axial slice of a volume in RAS+ orientation, shown the radiological way, 8-bit; for a
    time series, its middle frame as a 2D image is shown."""
    if image.frames is not None:
        values, samples = display_array(image.frame(image.frame_count // 2))
        return display.to_uint8_native(values), samples
    data = image.data
    spatial_and_samples = 4 if image.has_samples else 3
    while data.ndim > spatial_and_samples:  # 4D and beyond: the first time point
        data = data[:, :, :, 0, ...] if not image.has_samples else data[:, :, :, 0]
    if image.affine is not None:
        data = apply_orientation(data, io_orientation(image.affine))
    axial = display.radiological_view(data[:, :, data.shape[2] // 2])
    if image.has_samples:
        return display.to_uint8_native(axial), image.samples
    return display.to_display_uint8(axial, image.display, fallback_pct=(0.5, 99.5)), "L"


def _entry(path: Path, media_type: str, role: str) -> dict[str, str]:
    return {"filename": path.name, "path": str(path), "media_type": media_type, "role": role}


def write_outputs(
    image: Image, out_dir: Path, stem: str, output_format: str = "png", source: Image | None = None
) -> list[dict[str, str]]:
    """Write the result files; the primary output comes first. With ``source`` (the decoded input)
    of a format a browser cannot show, the input view (see ``write_input_view``) comes last."""
    out_dir = Path(out_dir)
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


def _write_result(image: Image, out_dir: Path, stem: str, output_format: str) -> list[dict[str, str]]:
    if image.kind == "2d" and image.frames is None:
        values, samples = display_array(image)
        if output_format == "jpeg":
            path = out_dir / output_name(stem, "processed_jpeg")
            io_raster.write_jpeg(values, samples, path)
        else:
            path = out_dir / output_name(stem, "processed_png")
            io_raster.write_png(values, samples, path)
        return [_entry(path, MEDIA_TYPES[output_format], "primary")]

    volume_path = out_dir / output_name(stem, "processed_nifti")
    dtype = np.float32 if image.data.dtype.kind == "f" else None
    io_nifti.write_nifti(image, volume_path, dtype=dtype)
    preview_path = out_dir / output_name(stem, "preview_png")
    values, samples = preview_array(image)
    io_raster.write_png(values, samples, preview_path)
    return [
        _entry(volume_path, MEDIA_TYPES["nifti"], "primary"),
        _entry(preview_path, MEDIA_TYPES["png"], "preview"),
    ]
