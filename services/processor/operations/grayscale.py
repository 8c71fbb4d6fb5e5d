"""grayscale: colour to one channel."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.processor.imaging import filters
from services.processor.imaging.image import Display, Image
from services.processor.operations.registry import Operation, register
from services.processor.operations.schema import STANDARD_OUTPUTS, params_schema


def grayscale(image: Image, params: dict[str, Any]) -> Image:
    if image.samples in ("L", "LA"):
        return image.with_data(image.data)  # already grey
    grey = filters.cast_like(filters.luminance(image.data), image.data.dtype)
    if image.samples == "RGBA":
        return image.with_data(np.stack([grey, image.data[..., 3]], axis=-1), samples="LA")
    display = image.display if image.kind == "2d" else Display(native=False)
    return image.with_data(grey, samples="L", display=display)


register(
    Operation(
        name="grayscale",
        title="Grayscale",
        description="Colour to one channel with ITU-R BT.601 luma weights (alpha kept); grey images are "
        "returned unchanged.",
        params_schema=params_schema({}),
        outputs=STANDARD_OUTPUTS,
        apply=grayscale,
    )
)
