"""The operations catalogue: one registry entry per task type, with its JSON Schema and function.

A new operation is one ``_register(Operation(...))`` call: a name, words for the catalogue, the
params schema (every param has a default; no extra params), and a function Image -> Image built
from the pure functions in ``imaging``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from services.common.keys import is_valid_stem
from services.processor import imaging
from services.processor.imaging import filters, geometry, limits
from services.processor.imaging.image import Display, Image

# Results are never larger than the inputs accepted (imaging/limits.py).
MAX_OUTPUT_VOXELS = limits.MAX_VOLUME_VOXELS
MAX_OUTPUT_PIXELS = limits.MAX_IMAGE_PIXELS


class ParamsError(ValueError):
    """Params that do not fit the operation; ``str(error)`` is written for users."""


@dataclass(frozen=True)
class Operation:
    name: str
    title: str
    description: str
    accepts: tuple[str, ...]
    params_schema: dict[str, Any]
    outputs: str
    apply: Callable[[Image, dict[str, Any]], Image]
    check: Callable[[dict[str, Any]], None] | None = None  # rules a schema says badly


_REGISTRY: dict[str, Operation] = {}
_VALIDATORS: dict[str, jsonschema.protocols.Validator] = {}

ALL_INPUTS = ("2d", "3d", "dicom", "nifti")
STANDARD_OUTPUTS = "PNG for 2D inputs (JPEG with output_format=jpeg); .nii.gz plus a PNG preview for volumes"

OUTPUT_FORMAT = {
    "type": "string",
    "enum": ["png", "jpeg"],
    "default": "png",
    "description": "File format of 2D results; volumes are always .nii.gz with a PNG preview.",
}


def _schema(properties: dict[str, Any], presets: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An operation's params schema. ``x-order`` lists the params in the order a form should show
    them (main params first, output_format last): JSON object keys lose their order on the way
    through protobuf Struct. ``examples`` are presets a form offers: params plus an ``x-title``."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {**properties, "output_format": OUTPUT_FORMAT},
        "additionalProperties": False,
        "x-order": [*properties, "output_format"],
    }
    if presets:
        schema["examples"] = presets
    return schema


def preset_params(preset: dict[str, Any]) -> dict[str, Any]:
    """The params of a preset (its x- annotations left out)."""
    return {k: v for k, v in preset.items() if not k.startswith("x-")}


def _register(op: Operation) -> None:
    jsonschema.Draft202012Validator.check_schema(op.params_schema)
    _REGISTRY[op.name] = op
    _VALIDATORS[op.name] = jsonschema.Draft202012Validator(op.params_schema)
    for preset in op.params_schema.get("examples", []):
        validate_params(op.name, preset_params(preset))  # a broken preset fails at import


# -- public interface ------------------------------------------------------------------------------


def catalogue() -> list[dict[str, Any]]:
    """Every operation, for GET /operations and ListOperations."""
    return [
        {
            "name": op.name,
            "title": op.title,
            "description": op.description,
            "accepts": list(op.accepts),
            "params_schema": copy.deepcopy(op.params_schema),
            "outputs": op.outputs,
        }
        for op in _REGISTRY.values()
    ]


def validate_params(task_type: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The params with defaults filled in; ParamsError for an unknown operation or bad params."""
    op = _REGISTRY.get(task_type)
    if op is None:
        known = ", ".join(sorted(_REGISTRY))
        raise ParamsError(f"Unknown task_type {task_type!r}; available operations: {known}")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ParamsError("params must be a JSON object")
    errors = sorted(_VALIDATORS[task_type].iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        raise ParamsError(_readable(errors[0], op))
    filled = copy.deepcopy(params)
    for name, prop in op.params_schema["properties"].items():
        if name not in filled and "default" in prop:
            filled[name] = copy.deepcopy(prop["default"])
    if op.check is not None:
        op.check(filled)
    return filled


def run(
    task_type: str,
    params: dict[str, Any],
    input_path: str,
    out_dir: str,
    output_stem: str,
    progress: Callable[[int, str], None] | None = None,
) -> dict[str, Any]:
    """Decode the input (format by content), apply the operation, write the outputs into out_dir.

    Returns {"outputs": [{"filename", "path", "media_type", "role"}, ...] (primary first; for a
    DICOM or DICOM-series ZIP input also the input itself as role "input", a PNG or .nii.gz that a
    browser can show), "metadata": {...}}. Raises ImagingError for bad inputs and ParamsError for bad params.
    """
    if not is_valid_stem(output_stem):
        raise ValueError(f"unsafe output_stem {output_stem!r}")
    params = validate_params(task_type, params)
    report = progress or (lambda _percent, _message: None)

    image = imaging.load(Path(input_path))
    report(40, "decoded")
    result = _REGISTRY[task_type].apply(image, params)
    report(70, "processed")
    outputs = imaging.write_outputs(
        result, Path(out_dir), output_stem, params.get("output_format", "png"), source=image
    )

    metadata = dict(result.metadata)
    metadata.update(imaging.summary(result))
    metadata["input_shape"] = list(image.data.shape)
    metadata["operation"] = task_type
    return {"outputs": outputs, "metadata": imaging.jsonable(metadata)}


# -- readable schema errors ------------------------------------------------------------------------


def _readable(error: jsonschema.ValidationError, op: Operation) -> str:
    path = "".join(
        f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
        for i, p in enumerate(error.absolute_path)
    )
    name = path or "params"
    schema = error.schema if isinstance(error.schema, dict) else {}
    value = error.validator_value
    match error.validator:
        case "additionalProperties":
            allowed = ", ".join(op.params_schema["properties"])
            extra = sorted(set(error.instance) - set(op.params_schema["properties"]))
            return f"Unknown parameter {', '.join(map(repr, extra))} for {op.name}; allowed: {allowed}"
        case "exclusiveMinimum":
            return f"{name} must be greater than {value}"
        case "minimum":
            return f"{name} must be at least {value}"
        case "exclusiveMaximum":
            return f"{name} must be less than {value}"
        case "maximum":
            return f"{name} must be at most {value}"
        case "enum":
            return f"{name} must be one of: {', '.join(map(str, value))}"
        case "type":
            kinds = value if isinstance(value, list) else [value]
            words = {
                "number": "a number",
                "integer": "a whole number",
                "boolean": "true or false",
                "string": "a string",
                "array": "a list",
                "object": "an object",
                "null": "null",
            }
            return f"{name} must be {' or '.join(words.get(k, k) for k in kinds)}"
        case "minItems" | "maxItems":
            return (
                f"{name} must have {value} values"
                if schema.get("minItems") == schema.get("maxItems")
                else f"{name}: {error.message}"
            )
        case "anyOf" | "oneOf":
            return f"{name} must be {schema.get('x-expects', 'a valid value')}"
    return f"{name}: {error.message}"


# -- operation functions ---------------------------------------------------------------------------


def _restore(values: np.ndarray, image: Image) -> np.ndarray:
    """Display-valued images (PNG, JPEG, colour DICOM) go back to their integer type; real values
    stay float32."""
    if image.display.native or image.has_samples:
        return filters.cast_like(values, image.data.dtype)
    return values


def _spatial_spacing(image: Image) -> tuple[float, float, float]:
    if image.affine is not None:
        return geometry.voxel_sizes(image.affine)
    return tuple(image.spacing or (1.0, 1.0, 1.0))  # type: ignore[return-value]


def blur(image: Image, params: dict[str, Any]) -> Image:
    sigma = float(params["sigma"])
    extra = (0.0,) * (image.data.ndim - image.spatial_ndim)  # no blur across samples or time
    if image.kind == "2d":
        sigmas: tuple[float, ...] = (sigma, sigma) + extra
    else:
        sigmas = filters.sigmas_in_voxels(sigma, _spatial_spacing(image)) + extra
    # a sigma beyond twice its axis is capped (the blur is then that axis's mean): say so
    sigmas = filters.effective_sigmas(sigmas, image.data.shape)
    out = image.with_data(_restore(filters.gaussian_blur(image.data, sigmas), image))
    out.metadata["sigma_voxels"] = [round(s, 6) for s in sigmas[: image.spatial_ndim]]
    return out


def _check_resize(params: dict[str, Any]) -> None:
    if params.get("spacing") is not None and params.get("shape") is not None:
        raise ParamsError("Give either spacing or shape for a volume resize, not both")


def resize(image: Image, params: dict[str, Any]) -> Image:
    width, height, keep_aspect = int(params["width"]), int(params["height"]), bool(params["keep_aspect"])
    if image.kind == "2d":
        rows, cols = image.data.shape[:2]
        if keep_aspect:
            width, height = filters.fit_inside(cols, rows, width, height)
        data = _restore(filters.resample_linear(image.data, (height, width)), image)
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
        new_shape = filters.shape_for_spacing(old_shape, _spatial_spacing(image), target)
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
    affine = geometry.resampled_affine(image.affine, old_shape, new_shape)
    data = _restore(filters.resample_linear(image.data, new_shape), image)
    return image.with_data(data, affine=affine, spacing=geometry.voxel_sizes(affine))


def grayscale(image: Image, params: dict[str, Any]) -> Image:
    if image.samples in ("L", "LA"):
        return image.with_data(image.data)  # already grey
    grey = filters.cast_like(filters.luminance(image.data), image.data.dtype)
    if image.samples == "RGBA":
        return image.with_data(np.stack([grey, image.data[..., 3]], axis=-1), samples="LA")
    display = image.display if image.kind == "2d" else Display(native=False)
    return image.with_data(grey, samples="L", display=display)


def _check_threshold(params: dict[str, Any]) -> None:
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
    if image.kind == "2d":
        out = image.with_data(mask.astype(np.uint8) * 255, samples="L", display=Display(native=True))
    else:
        out = image.with_data(mask.astype(np.uint8), samples="L", display=Display(window=(0.5, 1.0)))
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


# -- the catalogue ---------------------------------------------------------------------------------

_register(
    Operation(
        name="blur",
        title="Gaussian blur",
        description="Gaussian smoothing. 2D images: sigma in pixels, each colour channel separately. "
        "Volumes: a true 3D blur with sigma in millimetres, converted to voxels per axis from the voxel "
        "spacing; 4D data is blurred in space only. A sigma wider than twice an axis is capped there (the "
        "blur is then the mean along that axis); metadata sigma_voxels gives the sigmas used.",
        accepts=ALL_INPUTS,
        params_schema=_schema(
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

_register(
    Operation(
        name="resize",
        title="Resize / resample",
        description="2D: bilinear resize to width x height (keep_aspect fits the image inside that box). "
        "Volumes: linear resampling to a voxel spacing in mm or to a shape [x, y, z]; without either, "
        "each slice is resized to width x height. The affine is updated so the volume stays in place.",
        accepts=ALL_INPUTS,
        params_schema=_schema(
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
        check=_check_resize,
    )
)

_register(
    Operation(
        name="grayscale",
        title="Grayscale",
        description="Colour to one channel with ITU-R BT.601 luma weights (alpha kept); grey images are "
        "returned unchanged.",
        accepts=ALL_INPUTS,
        params_schema=_schema({}),
        outputs=STANDARD_OUTPUTS,
        apply=grayscale,
    )
)

_register(
    Operation(
        name="threshold",
        title="Threshold (binary mask)",
        description="Marks every pixel or voxel whose value lies between lower and upper (inclusive; in "
        "real units: HU for CT, pixel values for PNG/JPEG, luminance for colour). With neither bound "
        "given, the threshold is chosen by Otsu's method. 2D: a black and white PNG; volumes: a uint8 "
        ".nii.gz mask of 0/1 on the input's grid (overlay it on the input), with its volume in ml.",
        accepts=ALL_INPUTS,
        params_schema=_schema(
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
        outputs="A mask: black and white PNG for 2D inputs; uint8 .nii.gz (0/1) plus a PNG preview "
        "for volumes",
        apply=threshold,
        check=_check_threshold,
    )
)
