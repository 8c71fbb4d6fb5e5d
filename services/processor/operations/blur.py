"""blur: Gaussian smoothing, in 3D for volumes."""

from __future__ import annotations

from typing import Any

from services.processor.imaging import filters
from services.processor.imaging.image import Image
from services.processor.operations.helpers import restore, spatial_spacing
from services.processor.operations.registry import Operation, register
from services.processor.operations.schema import STANDARD_OUTPUTS, params_schema


def blur(image: Image, params: dict[str, Any]) -> Image:
    sigma = float(params["sigma"])
    extra = (0.0,) * (image.data.ndim - image.spatial_ndim)  # no blur across samples or time
    if image.kind == "2d":
        sigmas: tuple[float, ...] = (sigma, sigma) + extra
    else:
        sigmas = filters.sigmas_in_voxels(sigma, spatial_spacing(image)) + extra
    # a sigma beyond twice its axis is capped (the blur is then that axis's mean): say so
    sigmas = filters.effective_sigmas(sigmas, image.data.shape)
    out = image.with_data(restore(filters.gaussian_blur(image.data, sigmas), image))
    out.metadata["sigma_voxels"] = [round(s, 6) for s in sigmas[: image.spatial_ndim]]
    return out


register(
    Operation(
        name="blur",
        title="Gaussian blur",
        description="Gaussian smoothing. 2D images: sigma in pixels, each colour channel separately. "
        "Volumes: a true 3D blur with sigma in millimetres, converted to voxels per axis from the voxel "
        "spacing; 4D data is blurred in space only. A sigma wider than twice an axis is capped there (the "
        "blur is then the mean along that axis); metadata sigma_voxels gives the sigmas used.",
        params_schema=params_schema(
            {
                "sigma": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 50,
                    "default": 2.0,
                    "description": "Gaussian standard deviation: pixels for 2D, millimetres for volumes.",
                },
            },
            presets=[
                {"x-title": "Light (sigma 1)", "sigma": 1},
                {"x-title": "Medium (sigma 3)", "sigma": 3},
                {"x-title": "Strong (sigma 8)", "sigma": 8},
            ],
        ),
        outputs=STANDARD_OUTPUTS,
        apply=blur,
    )
)
