"""threshold: a binary mask of the values between two bounds (Otsu's method without bounds)."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.processor.imaging import filters, geometry
from services.processor.imaging.image import Display, Image
from services.processor.operations.registry import Operation, ParamsError, register
from services.processor.operations.schema import params_schema


def _check(params: dict[str, Any]) -> None:
    lower, upper = params.get("lower"), params.get("upper")
    if lower is not None and upper is not None and lower > upper:
        raise ParamsError(f"lower ({lower}) must not be above upper ({upper})")


def threshold(image: Image, params: dict[str, Any]) -> Image:
    """A binary mask: 2D as a black/white PNG (0/255), volumes as a uint8 NIfTI of 0/1 labels on the
    input's grid. Colour images are thresholded on their luminance."""
    values = filters.luminance(image.data) if image.has_samples else image.data
    lower, upper = params.get("lower"), params.get("upper")
    automatic = lower is None and upper is None
    if automatic:
        lower = filters.otsu_threshold(values)
    mask = filters.band_mask(values, lower, upper)
    labels = mask.view(np.uint8)  # a bool is one byte, 0 or 1: the labels without a copy
    if image.kind == "2d":
        out = image.with_data(labels * np.uint8(255), samples="L", display=Display(native=True))
    else:
        out = image.with_data(labels, samples="L", display=Display(window=(0.5, 1.0)))
    inside = int(np.count_nonzero(mask))
    out.metadata.update(
        content="mask",
        threshold_lower=lower,
        threshold_upper=upper,
        threshold_method="otsu" if automatic else "manual",
        mask_voxels=inside,
        mask_fraction=round(inside / max(mask.size, 1), 6),
    )
    if image.kind == "volume" and image.affine is not None:
        voxel_ml = float(np.prod(geometry.voxel_sizes(image.affine))) / 1000.0
        frames = int(np.prod(mask.shape[3:], dtype=np.int64))
        out.metadata["mask_volume_ml"] = round(inside * voxel_ml / frames, 3)
    return out


register(
    Operation(
        name="threshold",
        title="Threshold (binary mask)",
        description="Marks every pixel or voxel whose value lies between lower and upper (inclusive; in "
        "real units: HU for CT, pixel values for PNG/JPEG, luminance for colour). With neither bound "
        "given, the threshold is chosen by Otsu's method. 2D: a black and white PNG; volumes: a uint8 "
        ".nii.gz mask of 0/1 on the input's grid (overlay it on the input), with its volume in ml.",
        params_schema=params_schema(
            {
                "lower": {
                    "type": ["number", "null"],
                    "default": None,
                    "description": "Lowest value inside the mask. Empty (and upper empty): Otsu's method.",
                },
                "upper": {
                    "type": ["number", "null"],
                    "default": None,
                    "description": "Highest value inside the mask. Empty: no upper bound.",
                },
            },
            presets=[
                {"x-title": "Automatic (Otsu)", "lower": None, "upper": None},
                {"x-title": "CT bone (300 HU and above)", "lower": 300, "upper": None},
                {"x-title": "CT soft tissue (-100 to 300 HU)", "lower": -100, "upper": 300},
                {"x-title": "CT lung (-1000 to -400 HU)", "lower": -1000, "upper": -400},
            ],
        ),
        outputs="A mask: black and white PNG for 2D inputs; uint8 .nii.gz (0/1) plus axial, coronal and "
        "sagittal PNG previews for volumes; DICOM with output_format=dicom for DICOM inputs",
        apply=threshold,
        check=_check,
    )
)
