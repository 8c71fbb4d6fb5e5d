"""normalize: intensities to a common scale (min-max, z-score, percentile)."""

from __future__ import annotations

from typing import Any

from services.processor.imaging import intensity
from services.processor.imaging.image import Display, Image
from services.processor.operations.helpers import grey_values
from services.processor.operations.registry import Operation, OperationError, ParamsError, register
from services.processor.operations.schema import params_schema


def _check(params: dict[str, Any]) -> None:
    if params["method"] == "percentile" and not params["low"] < params["high"]:
        raise ParamsError(f"low ({params['low']}) must be below high ({params['high']})")


def normalize(image: Image, params: dict[str, Any]) -> Image:
    """Over every finite pixel or voxel at once (every frame of a cine, every time point of a 4D
    volume: one linear map, nothing mixed between them). Colour: its luminance."""
    method = params["method"]
    try:
        values, facts = intensity.normalize(grey_values(image), method, params["low"], params["high"])
    except ValueError as exc:
        raise OperationError(f"normalize: {exc}") from None
    # 0..1 results shown black to white; z-scores over their range
    shown = Display() if method == "zscore" else Display(window=(0.5, 1.0), voi_function="LINEAR_EXACT")
    out = image.with_data(values, samples="L", display=shown)
    out.metadata.update({f"normalize_{k}": v for k, v in facts.items()})
    out.metadata.update(normalize_method=method, units="z-score" if method == "zscore" else "0-1")
    return out


register(
    Operation(
        name="normalize",
        title="Normalize intensities",
        description="minmax: to 0..1 between the minimum and maximum; zscore: (value - mean) / standard "
        "deviation over all voxels; percentile: clipped to the low and high percentiles, then to 0..1. "
        "Statistics over every finite value of the image (colour: its luminance). Volumes give a "
        "float32 .nii.gz.",
        params_schema=params_schema(
            {
                "method": {
                    "type": "string",
                    "enum": ["minmax", "zscore", "percentile"],
                    "default": "minmax",
                    "description": "minmax (0..1), zscore (mean 0, standard deviation 1) or percentile "
                    "(clip to low/high percentiles, then 0..1).",
                },
                "low": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 100,
                    "default": 1.0,
                    "description": "percentile: the lower percentile, in percent (0-100).",
                },
                "high": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 100,
                    "default": 99.0,
                    "description": "percentile: the upper percentile, in percent (0-100).",
                },
            },
            presets=[
                {"x-title": "Min-max to 0..1", "method": "minmax"},
                {"x-title": "Z-score", "method": "zscore"},
                {"x-title": "Robust (1st-99th percentile)", "method": "percentile", "low": 1, "high": 99},
                {
                    "x-title": "Robust (0.5th-99.5th percentile)",
                    "method": "percentile",
                    "low": 0.5,
                    "high": 99.5,
                },
            ],
        ),
        outputs="2D inputs: PNG (JPEG with output_format=jpeg; a DICOM with the float values through "
        "rescale with output_format=dicom for DICOM inputs); volumes: float32 .nii.gz plus axial, "
        "coronal and sagittal PNG previews",
        apply=normalize,
        check=_check,
    )
)
