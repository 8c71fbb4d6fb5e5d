"""Small pieces several operations share."""

from __future__ import annotations

import numpy as np

from services.processor.imaging import filters, geometry, limits
from services.processor.imaging.image import Image

# Results are never larger than the inputs accepted (imaging/limits.py).
MAX_OUTPUT_VOXELS = limits.MAX_VOLUME_VOXELS
MAX_OUTPUT_PIXELS = limits.MAX_IMAGE_PIXELS


def restore(values: np.ndarray, image: Image) -> np.ndarray:
    """Display-valued images (PNG, JPEG, colour DICOM) go back to their integer type; real values
    stay float32."""
    if image.display.native or image.has_samples:
        return filters.cast_like(values, image.data.dtype)
    return values


def spatial_spacing(image: Image) -> tuple[float, float, float]:
    """A volume's voxel size in mm along its three spatial axes."""
    if image.affine is not None:
        return geometry.voxel_sizes(image.affine)
    return tuple(image.spacing or (1.0, 1.0, 1.0))  # type: ignore[return-value]


def grey_values(image: Image) -> np.ndarray:
    """The values an intensity operation works on: real values, or the BT.601 luminance of colour
    (alpha left out)."""
    return filters.luminance(image.data) if image.has_samples else image.data


def spatial_ndim_of(image: Image) -> int:
    """Axes that are space: 2 for a 2D image (a time series is handled frame by frame), 3 for a
    volume (later axes are time or colour)."""
    return image.spatial_ndim


def pixel_spacing(image: Image) -> tuple[float, ...]:
    """Millimetres per step along each spatial axis: a volume's voxel size, a 2D image's pixel
    spacing (row, column) when known, else 1 (per pixel)."""
    if image.kind == "volume":
        return spatial_spacing(image)
    return tuple(float(s) for s in image.spacing[:2]) if image.spacing else (1.0, 1.0)
