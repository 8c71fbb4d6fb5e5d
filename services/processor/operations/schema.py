"""Params schemas: how an operation's schema is built, and its errors put in plain words."""

from __future__ import annotations

from typing import Any

import jsonschema

OUTPUT_FORMAT = {
    "type": "string",
    "enum": ["png", "jpeg", "dicom"],
    "default": "png",
    "description": "png or jpeg: the file format of 2D results (volumes are .nii.gz with axial, coronal "
    "and sagittal PNG previews). dicom, for DICOM inputs only: a derived DICOM in a new series of the "
    "same study (a volume: a ZIP of one file per slice).",
}

STANDARD_OUTPUTS = (
    "PNG for 2D inputs (JPEG with output_format=jpeg); .nii.gz plus axial, coronal and sagittal PNG "
    "previews for volumes; with output_format=dicom (DICOM inputs) a derived DICOM (.dcm, or a ZIP "
    "series for volumes)"
)


def params_schema(
    properties: dict[str, Any],
    presets: list[dict[str, Any]] | None = None,
    output_format: dict[str, Any] | None = OUTPUT_FORMAT,
) -> dict[str, Any]:
    """An operation's params schema. ``x-order`` lists the params in the order a form should show
    them (main params first, output_format last): JSON object keys lose their order on the way
    through protobuf Struct. ``examples`` are presets a form offers: params plus an ``x-title``.
    Every param has a default; no other params are allowed. ``output_format`` None: the operation
    has no choice of output format."""
    extra = {"output_format": output_format} if output_format is not None else {}
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {**properties, **extra},
        "additionalProperties": False,
        "x-order": [*properties, *extra],
    }
    if presets:
        schema["examples"] = presets
    return schema


def preset_params(preset: dict[str, Any]) -> dict[str, Any]:
    """The params of a preset (its x- annotations left out)."""
    return {k: v for k, v in preset.items() if not k.startswith("x-")}


_TYPE_WORDS = {
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "string": "a string",
    "array": "a list",
    "object": "an object",
    "null": "null",
}


def readable_error(error: jsonschema.ValidationError, operation: str, schema: dict[str, Any]) -> str:
    """A schema error of `operation`'s params as one sentence for users."""
    path = "".join(
        f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
        for i, p in enumerate(error.absolute_path)
    )
    name = path or "params"
    failed = error.schema if isinstance(error.schema, dict) else {}
    value = error.validator_value
    match error.validator:
        case "additionalProperties":
            allowed = ", ".join(schema["properties"])
            extra = sorted(set(error.instance) - set(schema["properties"]))
            return f"Unknown parameter {', '.join(map(repr, extra))} for {operation}; allowed: {allowed}"
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
            return f"{name} must be {' or '.join(_TYPE_WORDS.get(k, k) for k in kinds)}"
        case "minItems" | "maxItems":
            return (
                f"{name} must have {value} values"
                if failed.get("minItems") == failed.get("maxItems")
                else f"{name}: {error.message}"
            )
        case "anyOf" | "oneOf":
            return f"{name} must be {failed.get('x-expects', 'a valid value')}"
    return f"{name}: {error.message}"
