"""Fixes after the second hands-on review: a DICOM folder becomes one volume job (packed into a ZIP
in the browser), the window applies to what is seen and survives overlay toggles, live updates
say when they are interrupted and recover, number fields reject what the browser cannot parse,
the result side panel, terminal progress labels, and the smaller things (identity form, row
names, status filter, focus after delete, no duplicate submit). Screenshots: test-output/web/."""

from __future__ import annotations

import io
import json
import os
import re
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest

from .conftest import VIEWPORT, new_user, sign_in
from .test_ui import JOB_TIMEOUT, open_volume_job, submit_job, wait_job_status

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _series_dir(root: Path, n: int = 5) -> Path:
    """A folder of n CT slices of one series, named without the .dcm extension for half of them
    (so the DICM sniffing is what recognises them), like a scanner export."""
    import pydicom
    from pydicom.data import get_testdata_file

    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder = root / "ct_series"
    folder.mkdir(parents=True)
    for i in range(n):
        ds = base.copy()
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + 2.5 * i]
        ds.SliceThickness = 2.5
        ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{i + 1}"
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        name = f"IM{i:03d}.dcm" if i % 2 else f"IM{i:03d}"
        (folder / name).write_bytes(out.getvalue())
    return folder


def test_dicom_folder_becomes_one_volume_job(page, tmp_path, shots):
    folder = _series_dir(tmp_path)
    sign_in(page, new_user("dcmdir"))
    page.set_input_files("#folder-input", str(folder))
    # One ZIP named after the folder replaces the five files.
    page.get_by_text(re.compile(r"packed as a series: ct_series \(5 DICOM files\)")).wait_for()
    rows = page.locator("#file-list .file-row")
    assert rows.count() == 1
    assert rows.first.locator(".file-name").inner_text() == "ct_series.zip"
    page.screenshot(path=str(shots / "dicom-folder-packed.png"))
    page.get_by_label("Operation").select_option("blur")
    page.get_by_role("button", name="Upload and run").click()
    page.wait_for_function("() => location.hash.startsWith('#job/')", timeout=JOB_TIMEOUT)
    wait_job_status(page, "SUCCESS")
    tasks = page.locator(".tasks tbody tr")
    assert tasks.count() == 1
    assert tasks.first.locator(".file-name").inner_text() == "ct_series.zip"
    page.locator('.viewer3d[data-state="ready"]').wait_for(timeout=JOB_TIMEOUT)
    # After a successful upload the picked files are gone: a second click cannot resubmit.
    assert page.get_by_role("button", name="Upload and run").is_disabled()
    page.screenshot(path=str(shots / "dicom-folder-volume.png"))


def _cal(page) -> list[list[float]]:
    return page.evaluate("() => window.niivue.volumes.map(v => [v.cal_min, v.cal_max])")


def test_window_follows_what_is_seen_and_survives_overlay_toggle(page, anatomical_nii, shots):
    page.goto("/?debug")
    sign_in(page, new_user("win"))
    open_volume_job(page, anatomical_nii, "blur", {"Sigma": "2"})
    viewer = page.locator(".viewer3d")
    assert viewer.get_attribute("data-volumes") == "1"
    assert page.evaluate("() => window.niivue.opts.isRadiologicalConvention") is True
    assert page.get_by_label("Radiological").is_checked()
    assert page.evaluate("() => window.niivue.opts.dragMode") == 9  # DRAG_MODE.windowing
    drag_options = page.get_by_label("Left drag").locator("option").all_inner_texts()
    assert "Window/level" in drag_options
    windowing = page.get_by_label("Left drag").locator("option", has_text="Window/level")
    assert windowing.get_attribute("value") == "9"

    page.get_by_label("Window", exact=True).select_option("bone")  # 400/1800 -> -500..1300
    page.get_by_label("Colormap", exact=True).select_option("hot")
    # Toggling the overlay reloads; the data-state goes through "loading" and the window and the
    # colormap are kept, on both volumes (a blurred copy is not a mask).
    page.evaluate(
        """() => { window.__states = [];
        const v = document.querySelector('.viewer3d');
        new MutationObserver(() => window.__states.push(v.dataset.state))
          .observe(v, {attributes: true, attributeFilter: ['data-state']}); }"""
    )
    page.get_by_label("Overlay result on input").check()
    page.locator('.viewer3d[data-state="ready"][data-volumes="2"]').wait_for()
    assert "loading" in page.evaluate("window.__states")
    assert page.get_by_label("C", exact=True).input_value() == "400"
    assert page.get_by_label("W", exact=True).input_value() == "1800"
    assert page.get_by_label("Colormap", exact=True).input_value() == "hot"
    assert _cal(page) == [[-500, 1300], [-500, 1300]]
    # The boxes drive both volumes too.
    page.get_by_label("C", exact=True).fill("100")
    page.get_by_label("C", exact=True).press("Enter")
    page.get_by_label("W", exact=True).fill("123456")
    page.get_by_label("W", exact=True).press("Enter")
    lo, hi = 100 - 123456 / 2, 100 + 123456 / 2
    assert _cal(page) == [[lo, hi], [lo, hi]]
    # A 6-digit width is fully visible in its box.
    assert page.get_by_label("W", exact=True).evaluate("e => e.scrollWidth <= e.clientWidth")
    # Right-drag windows continuously and the boxes follow.
    page.get_by_label("Window", exact=True).select_option("brain")
    page.get_by_role("button", name="Axial").click()
    box = page.locator(".nv-canvas").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down(button="right")
    page.mouse.move(x + 30, y - 20, steps=6)
    page.mouse.up(button="right")
    page.wait_for_timeout(200)
    c = float(page.get_by_label("C", exact=True).input_value())
    w = float(page.get_by_label("W", exact=True).input_value())
    assert (c, w) != (40, 80), (c, w)
    cal = _cal(page)
    assert cal[0] == cal[1], cal
    assert page.get_by_label("Window", exact=True).input_value() == "custom"
    page.get_by_label("Radiological").uncheck()
    assert page.evaluate("() => window.niivue.opts.isRadiologicalConvention") is False
    page.screenshot(path=str(shots / "window-kept-overlay.png"))


def test_4d_volume_has_a_frame_slider(page, shots):
    import nibabel

    example4d = Path(nibabel.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    page.goto("/?debug")
    sign_in(page, new_user("fourd"))
    open_volume_job(page, example4d, "grayscale")
    frame = page.get_by_label("Frame", exact=True)
    assert frame.is_visible()
    n = page.evaluate("() => window.niivue.volumes[0].nFrame4D")
    assert n > 1 and frame.get_attribute("max") == str(n - 1)
    frame.focus()
    page.keyboard.press("End")
    assert page.evaluate("() => window.niivue.volumes[0].frame4D") == n - 1
    page.screenshot(path=str(shots / "volume-4d-frame.png"))


def test_number_field_rejects_unparseable_input(page, sample_png, shots):
    sign_in(page, new_user("num"))
    page.set_input_files("#file-input", str(sample_png))
    page.get_by_label("Operation").select_option("blur")
    sigma = page.locator("#params").get_by_label("Sigma", exact=False).first
    sigma.fill("")
    sigma.focus()
    page.keyboard.type("1e400")
    assert sigma.evaluate("e => e.validity.badInput") is True
    page.get_by_role("button", name="Upload and run").click()
    assert sigma.get_attribute("aria-invalid") == "true"
    assert sigma.evaluate("e => e === document.activeElement")
    err = page.locator('#params [data-param="sigma"] .field-error')
    assert "not a valid number" in err.inner_text()
    assert err.get_attribute("id") in (sigma.get_attribute("aria-describedby") or "")
    page.screenshot(path=str(shots / "params-bad-number.png"))
    assert not page.url.count("#job/")
    assert page.locator(".job-list li").count() == 0
    # Fixing it clears the mark.
    sigma.fill("2")
    assert sigma.get_attribute("aria-invalid") is None
    assert err.is_hidden()


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
        "() => [...document.querySelectorAll('.tasks tbody tr')]"
        ".every(r => ['SUCCESS','FAILED'].includes(r.dataset.status))"
    )
    assert page.locator(".job-message").inner_text() == "1 of 2 succeeded, 1 failed"
    failed_bar = page.locator('.tasks tr[data-status="FAILED"] [role=progressbar]')
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

    # The status filter asks the server.
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
    # Re-open the result with its URL broken (as when a signed URL expired).
    page.route(re.compile(r".*_processed\.png.*"), lambda route: route.fulfill(status=404, body="gone"))
    page.evaluate(
        """() => { const img = document.querySelector('.layer:not(.layer-before) img');
        img.src = img.src + '&broken=1'; }"""
    )
    page.locator('.viewer2d[data-state="error"]').wait_for()
    assert page.locator(".viewer2d .zoom-text").is_hidden()
    assert page.get_by_label("Before / after").is_hidden()
    assert page.locator(".viewer2d .tag-left").is_hidden()


# ---- live updates on a platform of our own (its jobs service is stopped and started) -----------


@pytest.fixture
def own_platform(tmp_path):
    from tests.conftest import start_platform

    p = start_platform(tmp_path / "platform")
    yield p
    p.stop()


def freeze(plat, on: bool) -> None:
    """SIGSTOP / SIGCONT the processor and its workers (its own process group)."""
    proc = plat.procs.get("processor")
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGSTOP if on else signal.SIGCONT)


def test_live_updates_interrupted_then_recover(browser, own_platform, anatomical_nii, shots):
    plat = own_platform
    context = browser.new_context(viewport=VIEWPORT, base_url=plat.base_url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(30_000)
    try:
        user = new_user("live")
        sign_in(page, user)
        page.get_by_label("Operation").locator("option").first.wait_for(state="attached")
        # A job of many slow tasks, then the processor frozen (SIGSTOP) at once: the job stays
        # unfinished, so the page keeps following it.
        vol = anatomical_nii.read_bytes()
        r = httpx.post(
            plat.base_url + "/jobs",
            headers={"X-User-ID": user},
            files=[("files", (f"v{i}.nii", vol, "application/octet-stream")) for i in range(10)],
            data={"task_type": "blur", "params": json.dumps({"sigma": 8})},
            timeout=60,
        )
        freeze(plat, True)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        page.goto(f"/#job/{job_id}")
        unfinished = ':is([data-status="PENDING"], [data-status="RUNNING"])'
        page.locator(f'.job-detail[data-job-id="{job_id}"]{unfinished}').wait_for()

        plat.stop_service("jobs")
        live = page.locator(".job-detail .live-status")
        live.wait_for(state="visible", timeout=40_000)
        assert live.inner_text() == "Live updates interrupted — retrying…"
        row = page.locator(f'.job-list li[data-job-id="{job_id}"]')
        assert row.get_attribute("data-live") == "interrupted"
        assert "interrupted" in row.inner_text()
        page.screenshot(path=str(shots / "live-interrupted.png"))
        # It recovers by itself once the service is back.
        plat.start_service("jobs")
        live.wait_for(state="hidden", timeout=60_000)
        assert row.get_attribute("data-live") is None

        plat.stop_service("jobs")
        live.wait_for(state="visible", timeout=40_000)
        # A reload while the jobs service is down: the list says so and retries; the address
        # keeps the selected job.
        page.reload()
        page.get_by_text(re.compile(r"Jobs could not be loaded: 503.*retrying")).wait_for()
        assert f"#job/{job_id}" in page.url
        page.screenshot(path=str(shots / "list-retrying.png"))

        plat.start_service("jobs")
        page.locator(f'.job-detail[data-job-id="{job_id}"]').wait_for(timeout=60_000)
        assert f"#job/{job_id}" in page.url
        freeze(plat, False)
        page.locator(f'.job-detail[data-job-id="{job_id}"][data-status="SUCCESS"]').wait_for(timeout=JOB_TIMEOUT)
        assert page.locator(".job-detail .live-status").is_hidden()
        assert page.locator(f'.job-list li[data-job-id="{job_id}"]').get_attribute("data-live") is None
    finally:
        freeze(plat, False)
        context.close()
    assert not errors, errors


def test_first_result_replaces_an_earlier_failure(page, tmp_path):
    """The broken file fails in milliseconds, the big one takes seconds: the failure is shown
    first and then gives way to the result."""
    from PIL import Image

    y, x = np.mgrid[0:2000, 0:2000]
    checker = np.where(((x // 50) + (y // 50)) % 2 == 0, 230, 20).astype(np.uint8)
    slow = tmp_path / "slow_big.png"
    Image.fromarray(np.stack([checker] * 3, axis=-1)).save(slow)
    broken = tmp_path / "truncated.png"
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
    page.get_by_role("heading", name="Result: slow_big.png").wait_for()
    titles = page.evaluate("window.__titles")
    assert titles[-1] == "Result: slow_big.png"
    assert "Result: truncated.png" in titles, titles  # the failure was shown while the other ran


def test_presets_fill_the_form(page):
    sign_in(page, new_user("preset"))
    page.get_by_label("Operation").select_option("blur")
    page.get_by_label("Preset").select_option(label="Strong (sigma 8)")
    assert page.locator("#params").get_by_label("Sigma").first.input_value() == "8"
    page.get_by_label("Operation").select_option("threshold")
    page.get_by_label("Preset").select_option(label="CT lung (-1000 to -400 HU)")
    lower = page.locator("#params").get_by_label("Lower").first
    upper = page.locator("#params").get_by_label("Upper").first
    assert (lower.input_value(), upper.input_value()) == ("-1000", "-400")
    page.get_by_label("Preset").select_option(label="Automatic (Otsu)")
    assert (lower.input_value(), upper.input_value()) == ("", "")
