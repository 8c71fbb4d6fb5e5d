"""Time series of 2D frames (cine): apply a 2D operation one frame at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from .image import Image


def per_frame(image: Image, operation: Callable[[Image], Image]) -> Image:
    """``operation`` (2D Image -> 2D Image) applied to each frame of a time series, the results
    stacked back into one. A plain image is passed straight through.

    Every frame's result must have the same shape, type and samples; display, spacing and
    metadata come from the first frame's result (an operation decides them from its params, not
    from one frame's values, or it must not be applied per frame).
    """
    if image.frames is None:
        return operation(image)
    results = [operation(image.frame(t)) for t in range(image.frame_count)]
    first = results[0]
    for t, result in enumerate(results[1:], start=1):
        if result.data.shape != first.data.shape or result.samples != first.samples:
            raise ValueError(f"frame {t} gave a result of another shape than frame 0")
    out = np.empty((*first.data.shape[:2], len(results), *first.data.shape[2:]), dtype=first.data.dtype)
    for t, result in enumerate(results):
        out[:, :, t] = result.data
    return replace(first, data=out, frames=image.frames, metadata=dict(first.metadata))

