"""Running an operation on a file: decode, check, apply, write the outputs."""

from __future__ import annotations

import time
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
    browser can show), "metadata": {...}, "log": [...]} where "log" holds the task's log lines
    (notes_of the metadata, the seconds of each step). ``series_instance_uid`` picks one series of a
    ZIP; ``job_id`` is the task's job (operations that must agree across a job's tasks use it). Raises
    ImagingError for bad inputs, ParamsError for bad params and InputNotAccepted for an input the
    operation does not take; the exception carries the log lines written so far as its
    ``task_log`` attribute (it survives the trip out of the worker process).
    """
    log = StepLog()
    try:
        result = _run(task_type, params, input_path, out_dir, output_stem, progress, log,
                      job_id=job_id, series_instance_uid=series_instance_uid)
    except Exception as exc:
        log.failed()
        exc.task_log = list(log)  # type: ignore[attr-defined]
        raise
    result["log"] = list(log)
    return result


def _run(
    task_type: str,
    params: dict[str, Any],
    input_path: str,
    out_dir: str,
    output_stem: str,
    progress: Callable[[int, str], None] | None,
    log: StepLog,
    *,
    job_id: str,
    series_instance_uid: str,
) -> dict[str, Any]:
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
        log.begin(f"{task_type} (read, apply, write)", f"{task_type} of the {file_format.upper()} input")
        done = op.run_file(FileTask(path, file_format, Path(out_dir), output_stem, params, job_id, series))
        log.extend(notes_of(done["metadata"]))
        log.end()
        report(70, "processed")
        done["metadata"]["operation"] = task_type
        return {"outputs": done["outputs"], "metadata": imaging.jsonable(done["metadata"])}

    log.begin("decode", f"decode of the {file_format.upper()} input")
    image = imaging.load(path, series)
    log.extend(notes_of(image.metadata, list(image.data.shape)))
    log.end()
    op.check_kind(image)
    report(40, "decoded")
    assert op.apply is not None
    log.begin(f"operation {task_type}")
    result = op.apply(image, params)
    log.end()
    report(70, "processed")
    log.begin(f"encode ({output_format})")
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
    log.end()

    metadata = dict(result.metadata)
    metadata.update(imaging.summary(result))
    metadata["input_shape"] = list(image.data.shape)
    # the input's units and window where the result has its own (window, normalize, edges, ...)
    for key in ("units", "window_center", "window_width"):
        if key in image.metadata and metadata.get(key) != image.metadata[key]:
            metadata[f"input_{key}"] = image.metadata[key]
    metadata["operation"] = task_type
    return {"outputs": outputs, "metadata": imaging.jsonable(metadata)}


class StepLog(list[str]):
    """Log lines, and the seconds of each step: ``begin`` a step, ``end`` it (a line "step: 0.012
    s"), or ``failed`` while in it (a line "<step> failed after 0.012 s")."""

    def __init__(self) -> None:
        super().__init__()
        self._step: str | None = None
        self._failing = ""
        self._started = 0.0

    def begin(self, step: str, failing: str = "") -> None:
        self._step, self._failing, self._started = step, failing or step, time.perf_counter()

    def end(self) -> None:
        if self._step is not None:
            self.append(f"{self._step}: {time.perf_counter() - self._started:.3f} s")
            self._step = None

    def failed(self) -> None:
        if self._step is not None:
            self.append(f"{self._failing} failed after {time.perf_counter() - self._started:.3f} s")
            self._step = None


def notes_of(meta: dict[str, Any], shape: list[int] | None = None) -> list[str]:
    """Log lines from what the decoders and operations note in an image's metadata: how the input
    was read (format, decoder, transfer syntax) and what was assumed or left out on the way."""
    lines = []
    if meta.get("format"):
        shape = shape or meta.get("shape")
        lines.append(f"input: {str(meta['format']).upper()}"
                     + (f" {'x'.join(str(n) for n in shape)}" if isinstance(shape, list) and shape else ""))
    decoder, syntax = meta.get("decoder"), meta.get("transfer_syntax")
    if decoder:
        lines.append(f"pixel data decoded by {decoder}" + (f" (transfer syntax: {syntax})" if syntax else ""))
    elif syntax:
        lines.append(f"transfer syntax: {syntax}")
    if meta.get("frame_axis"):
        lines.append(f"{meta.get('frames') or 'the'} frames treated as {meta['frame_axis']}")
    if meta.get("spacing_assumed"):
        lines.append("pixel spacing not stated: 1 mm assumed")
    if meta.get("sorted_by") == "instance_number":
        lines.append("slices carry no positions: stacked by instance number")
    if meta.get("skipped_files"):
        lines.append(f"{meta['skipped_files']} file(s) of the ZIP skipped (not DICOM images)")
    warnings = meta.get("warnings")
    if isinstance(warnings, list):
        lines.extend(f"warning: {w}" for w in warnings if isinstance(w, str))
    return lines
