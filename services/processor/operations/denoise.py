"""denoise: median filter, or the edge-preserving bilateral filter."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.processor.imaging import denoise as maths
from services.processor.imaging.frames import per_frame
from services.processor.imaging.image import Image
from services.processor.operations.helpers import restore
from services.processor.operations.registry import Operation, ParamsError, register
from services.processor.operations.schema import STANDARD_OUTPUTS, params_schema


def _check(params: dict[str, Any]) -> None:
    if params["size"] % 2 == 0:
        raise ParamsError(f"size must be odd (a window centred on each pixel), not {params['size']}")


def _bilateral(frame: Image, size: int) -> np.ndarray:
    """Bilateral filter of grey values, of the colour of RGB(A), of the grey of LA; alpha kept."""
    data = frame.data
    if frame.samples == "L":
        return maths.bilateral(data, size, colour=False)
    out = data.astype(np.float64)
    if frame.samples in ("RGB", "RGBA"):
        out[..., :3] = maths.bilateral(data[..., :3], size, colour=True)
    else:
        out[..., 0] = maths.bilateral(data[..., 0], size, colour=False)
    return out


def denoise(image: Image, params: dict[str, Any]) -> Image:
    method, size = params["method"], int(params["size"])

    def one(frame: Image) -> Image:
        data = frame.data
        if method == "median":
            values = maths.median(data, size, frame.spatial_ndim)
        else:
            values = _bilateral(frame, size)
        if frame.display.native or frame.has_samples:
            values = restore(values, frame)
        elif values.dtype.kind == "f":
            values = values.astype(np.float32, copy=False)  # the median of float32 is float32
        return frame.with_data(values)

    out = per_frame(image, one)
    out.metadata.update(denoise_method=method, denoise_size=size)
    if method == "bilateral":
        out.metadata["denoise_planes"] = "2D planes (volumes: slice by slice along the third voxel axis)"
    return out


register(
    Operation(
        name="denoise",
        title="Denoise",
        description="median: the median of a size x size (x size for volumes) window, in 3D for volumes. "
        "bilateral: an edge-preserving average (scikit-image's denoise_bilateral) over a size x size "
        "window, weighted by distance and by value difference, with the value sigma twice the "
        "estimated noise, so edges stay sharp; volumes slice by slice. Cine frames one by one.",
        params_schema=params_schema(
            {
                "method": {
                    "type": "string",
                    "enum": ["median", "bilateral"],
                    "default": "median",
                    "description": "median, or bilateral (edge-preserving).",
                },
                "size": {
                    "type": "integer",
                    "minimum": 3,
                    "maximum": 15,
                    "default": 3,
                    "description": "Window side in pixels (voxels for volumes); odd.",
                },
            },
            presets=[
                {"x-title": "Median 3", "method": "median", "size": 3},
                {"x-title": "Median 5", "method": "median", "size": 5},
                {"x-title": "Edge-preserving (bilateral 5)", "method": "bilateral", "size": 5},
            ],
        ),
        outputs=STANDARD_OUTPUTS,
        apply=denoise,
        check=_check,
    )
)
