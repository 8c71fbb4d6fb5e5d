"""The job detail and its row in the list: the result side panel (downloads, clinical metadata
first), task messages and terminal progress labels, the row's name, the status filter, focus after
delete, the first result replacing an earlier failure, and a broken result image without viewer
controls. Screenshots: test-output/web/."""

from __future__ import annotations

import re

import numpy as np
import pytest

from .conftest import new_user, show_side_panel, sign_in
from .test_ui import JOB_TIMEOUT, submit_job, wait_job_status

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_result_side_terminal_labels_and_list(page, sample_png, tmp_path, shots):
    long_name = "a_very_long_file_name_" + "radiology_study_patient_series_" * 6 + "end.png"
    good = tmp_path / long_name
    good.write_bytes(sample_png.read_bytes())
    broken = tmp_path / "truncated.png"
    broken.write_bytes(sample_png.read_bytes()[:200])
    user = new_user("side")
    sign_in(page, user)
    # The identity form shows the app's own message for a bad id (no browser bubble).
    page.get_by_label("User ID").fill("not valid!")
    page.get_by_role("button", name="Use this ID").click()
    page.get_by_text("A user ID is 1-64 characters").wait_for()
    sign_in(page, user)

    job_id = submit_job(page, [good, broken], "blur")
    terminal = ", ".join(f'.job-detail[data-status="{s}"]' for s in ("SUCCESS", "FAILED"))
    page.locator(terminal).wait_for(timeout=JOB_TIMEOUT)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.task-gallery li')]"
        ".every(r => ['SUCCESS','FAILED'].includes(r.dataset.status))"
    )
    assert page.locator(".job-message").inner_text() == "1 of 2 succeeded, 1 failed"
    failed_bar = page.locator('.task-gallery li[data-status="FAILED"] [role=progressbar]')
    assert failed_bar.inner_text().strip() == "Failed"

    # The row names its first input and the file count.
    row = page.locator(f'.job-list li[data-job-id="{job_id}"]')
    assert long_name[:20] in row.inner_text() and "+ 1 more" in row.inner_text()

    # Downloads and Metadata: each heading above its own list, clinical facts first.
    page.get_by_role("heading", name=re.compile("Result: a_very_long")).wait_for()
    page.locator('.viewer2d[data-state="ready"]').wait_for()
    dl_head = page.get_by_role("heading", name="Downloads").bounding_box()
    dl_list = page.locator(".downloads").bounding_box()
    assert abs(dl_head["x"] - dl_list["x"]) < 2 and dl_list["y"] > dl_head["y"]
    meta_head = page.get_by_role("heading", name="Metadata").bounding_box()
    meta = page.get_by_test_id("metadata").bounding_box()
    assert abs(meta_head["x"] - meta["x"]) < 2 and meta["y"] > meta_head["y"]
    keys = page.locator('[data-testid="metadata"] tr').evaluate_all("rs => rs.map(r => r.dataset.key)")
    assert keys and keys[0] == "shape", keys
    technical = page.locator("details.meta-technical")
    assert technical.count() == 1 and technical.get_attribute("open") is None
    # The long heading wraps: the detail panel does not scroll sideways.
    panel = page.get_by_test_id("job-detail")
    assert panel.evaluate("e => e.scrollWidth <= e.clientWidth + 1")
    page.screenshot(path=str(shots / "result-side-long-name.png"))

    # The status filter asks the server (the list is in the side panel).
    show_side_panel(page)
    with page.expect_request(re.compile(r"/jobs\?.*status=FAILED")) as req:
        page.get_by_label("Status", exact=True).select_option("FAILED")
    assert req.value
    page.get_by_label("Status", exact=True).select_option("")
    row.wait_for()

    # After Delete, the focus is in the job list.
    row.get_by_role("button").click()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete job").click()
    row.wait_for(state="detached")
    page.wait_for_function("() => document.querySelector('.jobs-panel').contains(document.activeElement)")


def test_broken_result_image_has_no_viewer_chrome(page, sample_png):
    sign_in(page, new_user("broken"))
    submit_job(page, [sample_png], "blur")
    wait_job_status(page, "SUCCESS")
    page.locator('.viewer2d[data-state="ready"]').wait_for()
    # Re-open the result with its file gone (as when a signed URL expired).
    page.route(re.compile(r".*_processed\.png.*"), lambda route: route.fulfill(status=404, body="gone"))
    page.reload()
    page.locator('.viewer2d[data-state="error"]').wait_for()
    assert page.locator(".viewer2d .zoom-text").is_hidden()
    assert page.get_by_label("Before / after").is_hidden()
    assert page.locator(".viewer2d .tag-left").is_hidden()


def test_first_result_replaces_an_earlier_failure(page, tmp_path):
    """The job's first task (files are sent sorted by name) is broken and fails in milliseconds,
    the big one takes seconds: the first task's failure is shown, then gives way to the result."""
    from PIL import Image

    y, x = np.mgrid[0:2000, 0:2000]
    checker = np.where(((x // 50) + (y // 50)) % 2 == 0, 230, 20).astype(np.uint8)
    slow = tmp_path / "b_slow_big.png"
    Image.fromarray(np.stack([checker] * 3, axis=-1)).save(slow)
    broken = tmp_path / "a_truncated.png"
    broken.write_bytes(slow.read_bytes()[:300])
    sign_in(page, new_user("order"))
    submit_job(page, [broken, slow], "blur", {"Sigma": "30"})
    page.evaluate(
        """() => { window.__titles = [];
        const panel = document.querySelector('[data-testid=job-detail]');
        new MutationObserver(() => {
          const t = panel.querySelector('.result-title')?.textContent;
          if (t && t !== window.__titles.at(-1)) window.__titles.push(t);
        }).observe(panel, {subtree: true, childList: true, characterData: true}); }"""
    )
    page.locator('.job-detail[data-status="FAILED"], .job-detail[data-status="SUCCESS"]').wait_for(
        timeout=JOB_TIMEOUT
    )
    page.get_by_role("heading", name="Result: b_slow_big.png").wait_for()
    titles = page.evaluate("window.__titles")
    assert titles[-1] == "Result: b_slow_big.png"
    assert "Result: a_truncated.png" in titles, titles  # the failure was shown while the other ran
