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
