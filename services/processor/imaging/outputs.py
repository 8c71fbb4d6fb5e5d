"""Writing results: display PNG/JPEG for 2D, .nii.gz plus a PNG preview for volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation, io_orientation

from . import display, io_nifti, io_raster
from .image import Image

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "nifti": "application/gzip"}


def display_array(image: Image) -> tuple[np.ndarray, str]:
    """A 2D image as display values (uint8, or uint16 grey for 16-bit sources) and its samples."""
    if image.display.native:
        return image.data, image.samples
    return display.to_display_uint8(image.data, image.display), "L"


def preview_array(image: Image) -> tuple[np.ndarray, str]:
    """Middle axial slice of a volume in RAS+ orientation, shown the radiological way, 8-bit."""
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


def write_outputs(image: Image, out_dir: Path, stem: str, output_format: str = "png") -> list[dict[str, str]]:
    """Write the result files; the primary output comes first."""
    out_dir = Path(out_dir)
    if image.kind == "2d":
        values, samples = display_array(image)
        if output_format == "jpeg":
            path = out_dir / f"{stem}_processed.jpg"
            io_raster.write_jpeg(values, samples, path)
        else:
            path = out_dir / f"{stem}_processed.png"
            io_raster.write_png(values, samples, path)
        return [_entry(path, MEDIA_TYPES[output_format], "primary")]

    volume_path = out_dir / f"{stem}_processed.nii.gz"
    dtype = np.float32 if image.data.dtype.kind == "f" else None
    io_nifti.write_nifti(image, volume_path, dtype=dtype)
    preview_path = out_dir / f"{stem}_preview.png"
    values, samples = preview_array(image)
    io_raster.write_png(values, samples, preview_path)
    return [
        _entry(volume_path, MEDIA_TYPES["nifti"], "primary"),
        _entry(preview_path, MEDIA_TYPES["png"], "preview"),
    ]
