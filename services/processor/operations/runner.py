"""Running an operation on a file: decode, check, apply, write the outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.common.keys import is_valid_stem
from services.processor import imaging
from services.processor.imaging import limits
from services.processor.imaging.io_dicom_write import DicomWriteError
from services.processor.imaging.outputs import DicomTarget
from services.processor.operations import registry
from services.processor.operations.registry import FileTask, InputNotAccepted, OperationError

DICOM_FORMATS = ("dicom", "zip")  # imaging's names of the inputs a derived DICOM is made from


def run(
    task_type: str,
    params: dict[str, Any],
    input_path: str,
    out_dir: str,
    output_stem: str,
    progress: Callable[[int, str], None] | None = None,
    *,
    job_id: str = "",
    series_instance_uid: str = "",
) -> dict[str, Any]:
    """Decode the input (format by content), apply the operation, write the outputs into out_dir.

    Returns {"outputs": [{"filename", "path", "media_type", "role"}, ...] (primary first; for a
    DICOM or DICOM-series ZIP input also the input itself as role "input", a PNG or .nii.gz that a
    browser can show), "metadata": {...}}. ``series_instance_uid`` picks one series of a ZIP;
    ``job_id`` is the task's job (operations that must agree across a job's tasks use it). Raises
    ImagingError for bad inputs, ParamsError for bad params and InputNotAccepted for an input the
    operation does not take.
    """
    if not is_valid_stem(output_stem):
        raise ValueError(f"unsafe output_stem {output_stem!r}")
    op = registry.get(task_type)
    params = registry.validate_params(task_type, params)
    report = progress or (lambda _percent, _message: None)

    path = Path(input_path)
    file_format = imaging.detect_format(path)
    op.check_format(file_format)  # before decoding: refusing costs nothing
    output_format = params.get(op.output.param, "png")
    if output_format == "dicom" and not op.output.dicom_from_any and file_format not in DICOM_FORMATS:
        raise InputNotAccepted(
            f"output_format dicom needs a DICOM input (a DICOM file or a ZIP of DICOM files); this "
            f"input is {file_format.upper()}: choose png or jpeg"
        )
    series = series_instance_uid or None
    limits.set_work_bytes(op.work_bytes)  # the memory budget check of the decoders below
    if op.run_file is not None:
        report(40, "decoded")
        done = op.run_file(FileTask(path, file_format, Path(out_dir), output_stem, params, job_id, series))
        report(70, "processed")
        done["metadata"]["operation"] = task_type
        return {"outputs": done["outputs"], "metadata": imaging.jsonable(done["metadata"])}

    image = imaging.load(path, series)
    op.check_kind(image)
    report(40, "decoded")
    assert op.apply is not None
    result = op.apply(image, params)
    report(70, "processed")
    dicom = None
    if output_format == "dicom":
        header = imaging.dicom_header(path, series)
        derived_params = {k: v for k, v in params.items() if k != op.output.param}
        dicom = DicomTarget(header, task_type, derived_params, keep_plane=op.output.keeps_plane)
    try:
        outputs = imaging.write_outputs(
            result, Path(out_dir), output_stem, output_format, source=image, dicom=dicom,
            volume_as_images=op.output.volume_as_images,
        )
    except DicomWriteError as exc:
        raise OperationError(str(exc)) from None

    metadata = dict(result.metadata)
    metadata.update(imaging.summary(result))
    metadata["input_shape"] = list(image.data.shape)
    metadata["operation"] = task_type
    return {"outputs": outputs, "metadata": imaging.jsonable(metadata)}
