"""edges: Sobel gradient magnitude (3D for volumes), or Canny's binary edges."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.processor.imaging import edges as maths
from services.processor.imaging.frames import per_frame
from services.processor.imaging.image import Display, Image
from services.processor.operations.helpers import grey_values, pixel_spacing
from services.processor.operations.registry import Operation, ParamsError, register
from services.processor.operations.schema import params_schema


def _check(params: dict[str, Any]) -> None:
    if params["method"] == "canny" and not params["low"] <= params["high"]:
        raise ParamsError(f"low ({params['low']}) must not be above high ({params['high']})")


def edges(image: Image, params: dict[str, Any]) -> Image:
    method = params["method"]
    spacing = pixel_spacing(image)
    units = str(image.metadata.get("units") or "value")

    def one(frame: Image) -> Image:
        values = grey_values(frame)
        if method == "sobel":
            magnitude = maths.sobel_magnitude(values, spacing)
            return frame.with_data(magnitude, samples="L", display=Display())
        mask = maths.canny_slices(values, float(params["sigma"]), float(params["low"]), float(params["high"]))
        if frame.kind == "2d":
            return frame.with_data(mask * np.uint8(255), samples="L", display=Display(native=True))
        return frame.with_data(mask, samples="L", display=Display(window=(0.5, 1.0)))

    out = per_frame(image, one)
    out.metadata["edges_method"] = method
    if method == "sobel":
        per = "mm" if image.kind == "volume" or image.spacing else "pixel"
        out.metadata.update(units=f"{units} per {per}", gradient_spacing=list(spacing))
    else:
        out.metadata.update(
            content="mask",
            canny_sigma=params["sigma"],
            canny_low=params["low"],
            canny_high=params["high"],
            units="edge 0/1",
        )
        if image.kind == "volume":
            out.metadata["canny_planes"] = "slice by slice along the third voxel axis"
    return out


register(
    Operation(
        name="edges",
        # Sobel's derivatives and magnitude in float64 next to the float input: measured ~16 bytes
        # a value on 16-bit grey, just over the default's margin.
        work_bytes={"2d": 24},
        title="Edge detection",
        description="sobel: the gradient magnitude (Sobel derivatives, in 3D for volumes) in real units "
        "per millimetre where the spacing is known (else per pixel). canny: Canny's binary edges "
        "(scikit-image), slice by slice for volumes; low and high are quantiles of the gradient "
        "magnitude. Colour images use their luminance; cine frames one by one.",
        params_schema=params_schema(
            {
                "method": {
                    "type": "string",
                    "enum": ["sobel", "canny"],
                    "default": "sobel",
                    "description": "sobel (gradient magnitude) or canny (binary edges).",
                },
                "sigma": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 20,
                    "default": 1.0,
                    "description": "canny: Gaussian smoothing before the gradient, in pixels.",
                },
                "low": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "default": 0.7,
                    "description": "canny: hysteresis low threshold, a quantile (0-1) of the gradient "
                    "magnitude: weaker edges connected to strong ones are kept down to it.",
                },
                "high": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "default": 0.9,
                    "description": "canny: hysteresis high threshold, quantile 0-1; edges start above it.",
                },
            },
            presets=[
                {"x-title": "Sobel gradient magnitude", "method": "sobel"},
                {"x-title": "Canny (fine)", "method": "canny", "sigma": 1, "low": 0.7, "high": 0.9},
                {
                    "x-title": "Canny (smooth, strong edges)",
                    "method": "canny",
                    "sigma": 3,
                    "low": 0.8,
                    "high": 0.95,
                },
            ],
        ),
        outputs="sobel: a float image (PNG for 2D, float32 .nii.gz plus previews for volumes); canny: a "
        "black and white PNG for 2D, a uint8 0/1 .nii.gz mask plus previews for volumes; DICOM with "
        "output_format=dicom for DICOM inputs",
        apply=edges,
        check=_check,
    )
)
