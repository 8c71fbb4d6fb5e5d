"""Running an operation on a file: decode, check, apply, write the outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.common.keys import is_valid_stem
from services.processor import imaging
from services.processor.operations import registry


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
    browser can show), "metadata": {...}}. Raises ImagingError for bad inputs, ParamsError for bad
    params and InputNotAccepted for an input the operation does not take.
    """
    if not is_valid_stem(output_stem):
        raise ValueError(f"unsafe output_stem {output_stem!r}")
    op = registry.get(task_type)
    params = registry.validate_params(task_type, params)
    report = progress or (lambda _percent, _message: None)

    path = Path(input_path)
    op.check_format(imaging.detect_format(path))  # before decoding: refusing costs nothing
    image = imaging.load(path)
    op.check_kind(image)
    report(40, "decoded")
    result = op.apply(image, params)
    report(70, "processed")
    outputs = imaging.write_outputs(
        result, Path(out_dir), output_stem, params.get("output_format", "png"), source=image
    )

    metadata = dict(result.metadata)
    metadata.update(imaging.summary(result))
    metadata["input_shape"] = list(image.data.shape)
    metadata["operation"] = task_type
    return {"outputs": outputs, "metadata": imaging.jsonable(metadata)}
