"""Per-task log lines: what the operation runner notes (decoder, transfer syntax, frames treated as
time, step times) travels with the terminal event, on success and on failure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.common.gen.radiology.v1 import common_pb2
from services.processor import operations
from services.processor.imaging import ImagingError
from tests.processor.imaging.helpers import dicom_file

from .conftest import CORRUPT_PNG, Harness, png_bytes

SUCCESS, FAILED = common_pb2.STATUS_SUCCESS, common_pb2.STATUS_FAILED
SECONDS = r"\d+\.\d{3} s"


def _run(tmp_path: Path, source: Path, task_type: str = "blur") -> dict:
    (tmp_path / "out").mkdir()
    return operations.run(task_type, operations.validate_params(task_type, {}), str(source),
                          str(tmp_path / "out"), "scan")


def test_runner_notes_decoder_transfer_syntax_and_step_times(tmp_path: Path) -> None:
    log = _run(tmp_path, dicom_file("JPEG2000.dcm"))["log"]
    assert log[0].startswith("input: DICOM")
    assert re.fullmatch(r"pixel data decoded by \S+ \(transfer syntax: JPEG 2000 Image Compression\)",
                        log[1]), log
    assert [re.sub(SECONDS, "T", line) for line in log[-3:]] == [
        "decode: T", "operation blur: T", "encode (png): T"]


def test_runner_notes_cine_frames_treated_as_time(tmp_path: Path) -> None:
    log = _run(tmp_path, dicom_file("examples_ybr_color.dcm"), "grayscale")["log"]
    assert any(line.startswith("30 frames treated as time") for line in log), log


def test_a_failure_carries_the_lines_written_before_it(tmp_path: Path) -> None:
    source = tmp_path / "broken.png"
    source.write_bytes(CORRUPT_PNG)
    with pytest.raises(ImagingError) as caught:
        _run(tmp_path, source)
    lines = [re.sub(SECONDS, "T", line) for line in caught.value.task_log]  # type: ignore[attr-defined]
    assert lines == ["decode of the PNG input failed after T"]


async def test_success_event_carries_bounded_log_lines(harness: Harness) -> None:
    await harness.worker()
    task = await harness.publish_task(png_bytes(80, 60), params={"sigma": 2})
    final = await harness.wait_terminal(task.task_id)
    assert final.status == SUCCESS
    lines = [re.sub(SECONDS, "T", line) for line in final.logs]
    assert lines[0].startswith("download: T (") and lines[1] == "input: PNG 60x80"
    assert lines[-4:] == ["decode: T", "operation blur: T", "encode (png): T",
                          lines[-1]] and lines[-1].startswith("upload: T (")
    assert not [e for e in harness.events_of(task.task_id) if e.status != SUCCESS and e.logs]
    assert not any("/" in line.split(" (")[0] for line in final.logs)  # no paths


async def test_failure_event_carries_log_lines_without_traceback(harness: Harness) -> None:
    await harness.worker(ack_wait_seconds=1.0)
    task = await harness.publish_task(CORRUPT_PNG, input_file="broken.png")
    final = await harness.wait_terminal(task.task_id)
    assert final.status == FAILED
    lines = [re.sub(SECONDS, "T", line) for line in final.logs]
    assert lines[0].startswith("download: T (")
    assert lines[1:] == ["decode of the PNG input failed after T", "processing stopped after T"], lines
    assert not any("Traceback" in line or str(harness.data_dir) in line for line in final.logs)


async def test_lines_written_in_the_worker_process_before_a_failure_reach_the_event(
    harness: Harness,
) -> None:
    await harness.worker(ack_wait_seconds=1.0)
    # mip takes DICOM, decodes it, then refuses a single 2D slice
    task = await harness.publish_task(dicom_file("CT_small.dcm").read_bytes(), task_type="mip",
                                      input_file="ct.dcm")
    final = await harness.wait_terminal(task.task_id)
    assert final.status == FAILED and final.error
    lines = [re.sub(SECONDS, "T", line) for line in final.logs]
    assert lines[1] == "input: DICOM 128x128" and lines[2].startswith("pixel data decoded by "), lines
    assert lines[3:] == ["decode: T", "processing stopped after T"], lines


def test_runner_notes_an_operations_own_warnings(tmp_path: Path) -> None:
    log = _run(tmp_path, dicom_file("CT_small.dcm"), "anonymize")["log"]
    assert any(line.startswith("warning: Burned In Annotation is not stated") for line in log), log
    assert re.fullmatch(r"anonymize \(read, apply, write\): " + SECONDS, log[-1])
