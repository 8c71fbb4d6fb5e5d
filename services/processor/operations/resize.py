"""resize: bilinear resize of 2D images, linear resampling of volumes (to a spacing or a shape)."""

from __future__ import annotations

import math
from typing import Any

from services.processor.imaging import filters, geometry, limits
from services.processor.imaging.image import Image
from services.processor.operations.helpers import MAX_OUTPUT_VOXELS, restore, spatial_spacing
from services.processor.operations.registry import Operation, ParamsError, register
from services.processor.operations.schema import STANDARD_OUTPUTS, params_schema


def _check(params: dict[str, Any]) -> None:
    if params.get("spacing") is not None and params.get("shape") is not None:
        raise ParamsError("Give either spacing or shape for a volume resize, not both")


def resize(image: Image, params: dict[str, Any]) -> Image:
    width, height, keep_aspect = int(params["width"]), int(params["height"]), bool(params["keep_aspect"])
    if image.kind == "2d":
        rows, cols = image.data.shape[:2]
        if keep_aspect:
            width, height = filters.fit_inside(cols, rows, width, height)
        limits.check_memory("The resized image", height * width * math.prod(image.data.shape[2:]), 1, "2d")
        data = restore(filters.resample_linear(image.data, (height, width)), image)
        spacing = None
        if image.spacing is not None:
            spacing = (image.spacing[0] * rows / height, image.spacing[1] * cols / width)
        return image.with_data(data, spacing=spacing)

    old_shape = image.data.shape[:3]
    if params.get("shape") is not None:
        new_shape = tuple(int(n) for n in params["shape"])
    elif params.get("spacing") is not None:
        target = params["spacing"]
        target = [float(target)] * 3 if isinstance(target, int | float) else [float(t) for t in target]
        new_shape = filters.shape_for_spacing(old_shape, spatial_spacing(image), target)
    else:  # like the 2D resize: each slice to width x height, slices kept
        if keep_aspect:
            width, height = filters.fit_inside(old_shape[0], old_shape[1], width, height)
        new_shape = (width, height, old_shape[2])
    voxels = math.prod(new_shape) * math.prod(image.data.shape[3:])  # exact: no int64 overflow
    if voxels > MAX_OUTPUT_VOXELS:
        raise ParamsError(
            f"The resized volume would have {voxels} voxels; at most {MAX_OUTPUT_VOXELS} are allowed"
        )
    if max(new_shape) > limits.MAX_VOLUME_SIDE:
        raise ParamsError(
            f"The resized volume would be {' x '.join(map(str, new_shape))} voxels; at most "
            f"{limits.MAX_VOLUME_SIDE} are allowed along each axis"
        )
    limits.check_memory("The resized volume", voxels, 4, "volume")  # a result larger than its input
    affine = geometry.resampled_affine(image.affine, old_shape, new_shape)
    data = restore(filters.resample_linear(image.data, new_shape), image)
    return image.with_data(data, affine=affine, spacing=geometry.voxel_sizes(affine))


register(
    Operation(
        name="resize",
        title="Resize / resample",
        description="2D: bilinear resize to width x height (keep_aspect fits the image inside that box). "
        "Volumes: linear resampling to a voxel spacing in mm or to a shape [x, y, z]; without either, "
        "each slice is resized to width x height. The affine is updated so the volume stays in place.",
        params_schema=params_schema(
            {
                "width": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 8192,
                    "default": 512,
                    "description": "Target width in pixels.",
                },
                "height": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 8192,
                    "default": 512,
                    "description": "Target height in pixels.",
                },
                "keep_aspect": {
                    "type": "boolean",
                    "default": False,
                    "description": "Keep the aspect ratio, fitting inside width x height.",
                },
                "spacing": {
                    "anyOf": [
                        {"type": "null"},
                        {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                        {
                            "type": "array",
                            "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                            "minItems": 3,
                            "maxItems": 3,
                        },
                    ],
                    "default": None,
                    "x-expects": "a voxel size in mm (0 < mm <= 100) or a list of 3 of them [x, y, z]",
                    "description": "Volumes: target voxel spacing in mm, one number or [x, y, z].",
                },
                "shape": {
                    "anyOf": [
                        {"type": "null"},
                        {
                            "type": "array",
                            "items": {"type": "integer", "minimum": 1, "maximum": 4096},
                            "minItems": 3,
                            "maxItems": 3,
                        },
                    ],
                    "default": None,
                    "x-expects": "a list of 3 whole numbers [x, y, z] between 1 and 4096",
                    "description": "Volumes: target shape in voxels [x, y, z].",
                },
            },
            presets=[
                {"x-title": "Thumbnail (256 x 256, aspect kept)", "width": 256, "height": 256,
                 "keep_aspect": True, "spacing": None, "shape": None},
                {"x-title": "1024 x 1024", "width": 1024, "height": 1024, "keep_aspect": False,
                 "spacing": None, "shape": None},
                {"x-title": "Volume: 1 mm isotropic", "spacing": 1, "shape": None},
                {"x-title": "Volume: 2 mm isotropic", "spacing": 2, "shape": None},
            ],
        ),
        outputs=STANDARD_OUTPUTS,
        apply=resize,
        check=_check,
    )
)
