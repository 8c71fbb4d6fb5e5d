"""Each task's log lines (decoder, step times, where a failure stopped) are shown next to its
result and next to its failure. Screenshot: test-output/web/task-log-*.png."""

from __future__ import annotations

import re

import pytest

from .conftest import new_user, sign_in
from .test_ui import JOB_TIMEOUT, submit_job

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_log_lines_show_beside_the_result_and_the_failure(page, sample_png, tmp_path, shots):
    good = tmp_path / "good.png"
    good.write_bytes(sample_png.read_bytes())
    broken = tmp_path / "truncated.png"
    broken.write_bytes(sample_png.read_bytes()[:200])
    sign_in(page, new_user("logs"))
    submit_job(page, [good, broken], "blur")
    page.locator('.job-detail[data-status="FAILED"]').wait_for(timeout=JOB_TIMEOUT)

    # The first task succeeded: its log is in the result's side panel.
    page.get_by_role("heading", name="Result: good.png").wait_for()
    log = page.get_by_role("region", name="Processing log")
    log.wait_for()
    lines = log.locator("li").all_inner_texts()
    assert lines[0].startswith("download: ") and lines[1].startswith("input: PNG ")
    assert any(re.fullmatch(r"operation blur: \d+\.\d{3} s", line) for line in lines), lines
    assert lines[-1].startswith("upload: ")
    assert log.is_visible()
    page.screenshot(path=str(shots / "task-log-success.png"))

    # The failed task: its error, and beside it the log up to where it stopped.
    page.get_by_role("button", name="View result of truncated.png").click()
    page.get_by_text("This task failed:").wait_for()
    failed_log = page.get_by_role("region", name="Processing log")
    failed_log.wait_for()
    failed = failed_log.locator("li").all_inner_texts()
    assert failed[0].startswith("download: ") and failed[-1].startswith("processing stopped after")
    assert failed[-2].startswith("decode of the PNG input failed after "), failed
    assert not any("Traceback" in line or "/tmp" in line for line in failed), failed
    page.screenshot(path=str(shots / "task-log-failure.png"))
