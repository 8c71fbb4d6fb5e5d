"""The web app in a real browser (Debian's chromium through Playwright) against the running
platform: upload and watch a 2D job, compare before/after, draw volumes with NiiVue, see the
upload errors, keep users apart, page through the job list. Screenshots: test-output/web/."""

from __future__ import annotations

import json
import re
import time

import pytest

from .conftest import job_id_from_url, new_user, pixel_stats, show_side_panel, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JOB_TIMEOUT = 90_000  # ms


def submit_job(page, files, operation: str = "blur", params: dict[str, str] | None = None) -> str:
    show_side_panel(page)
    page.set_input_files("#file-input", [str(f) for f in files])
    page.get_by_label("Operation").select_option(operation)
    for label, value in (params or {}).items():
        page.locator("#params").get_by_label(label, exact=False).first.fill(value)
    page.get_by_role("button", name="Upload and run").click()
    page.wait_for_function(
        "() => location.hash.startsWith('#job/') || !document.querySelector('#upload-error').hidden",
        timeout=JOB_TIMEOUT,
    )
    error = page.get_by_test_id("upload-error")
    assert not error.is_visible(), f"upload failed: {error.inner_text()}"
    job_id = job_id_from_url(page.url)
    assert job_id
    return job_id


def wait_job_status(page, status: str = "SUCCESS") -> None:
    page.locator(f'.job-detail[data-status="{status}"]').wait_for(timeout=JOB_TIMEOUT)


def before_and_after(page, shots, name: str) -> tuple[bytes, bytes]:
    """Screenshots of the 2D viewer with the before/after slider at each end: (before, after)."""
    viewport = page.get_by_test_id("viewer2d")
    page.get_by_label("Before / after").focus()
    page.keyboard.press("Home")  # all "after"
    after = viewport.screenshot(path=str(shots / f"{name}-after.png"))
    page.keyboard.press("End")  # all "before"
    before = viewport.screenshot(path=str(shots / f"{name}-before.png"))
    return before, after


def test_png_blur_progress_and_before_after(page, base_url, sample_png, shots):
    sign_in(page, new_user("png"))
    job_id = submit_job(page, [sample_png], "blur", {"Sigma": "4"})
    # Record every value the job's progress bar shows while it runs.
    page.evaluate(
        """() => { window.__progress = [];
        const bar = document.querySelector('.job-detail [role=progressbar]');
        new MutationObserver(() => window.__progress.push(Number(bar.getAttribute('aria-valuenow'))))
          .observe(bar, {attributes: true}); }"""
    )
    # Upload progress of the file reached 100 %.
    assert page.locator(".file-row [role=progressbar]").first.get_attribute("aria-valuenow") == "100"
    wait_job_status(page, "SUCCESS")
    bar = page.locator(".job-detail [role=progressbar]").first
    assert bar.get_attribute("aria-valuenow") == "100"
    assert "100 %" in bar.inner_text()
    seen = page.evaluate("window.__progress")
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    task_bar = page.locator(".tasks [role=progressbar]").first
    assert task_bar.get_attribute("aria-valuenow") == "100"

    # The processed image is shown, with the input to compare against.
    page.locator('.viewer2d[data-state="ready"]').wait_for()
    page.locator('.viewer2d[data-compare="ready"]').wait_for()
    viewport = page.get_by_test_id("viewer2d")
    page.screenshot(path=str(shots / "png-blur-before-after.png"))

    before, after = before_and_after(page, shots, "png")
    assert page.locator(".viewer2d").get_attribute("data-split") == "100"  # the input uncovered all over
    # The blurred output and the sharp input look different: the input has more distinct edges.
    assert after != before
    sharp, blurred = pixel_stats(before), pixel_stats(after)
    assert sharp["nonblack"] > 0.3 and blurred["nonblack"] > 0.3
    assert blurred["distinct"] > sharp["distinct"], (sharp, blurred)

    # Zoom with the wheel, pan by dragging.
    zoom_text = page.locator(".zoom-text")
    before_zoom = zoom_text.inner_text()
    box = viewport.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -400)
    page.wait_for_function("t => document.querySelector('.zoom-text').textContent !== t", arg=before_zoom)
    t0 = viewport.get_attribute("data-view")  # scale, pan x, pan y
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2 + 30, steps=5)
    page.mouse.up()
    assert viewport.get_attribute("data-view") != t0
    viewport.screenshot(path=str(shots / "png-zoomed.png"))
    assert_controls_labelled(page)

    # Metadata and downloads.
    assert page.get_by_test_id("metadata").is_visible()
    link = page.get_by_role("link", name=re.compile(r"Download .*_processed\.png"))
    href = link.get_attribute("href")
    assert href and "/files/" in href
    resp = page.request.get(base_url + href if href.startswith("/") else href)
    assert resp.ok and resp.body()[:8] == b"\x89PNG\r\n\x1a\n"

    # The job list (in the side panel, folded away while the result is open) shows it with a
    # thumbnail.
    show_side_panel(page)
    row = page.locator(f'.job-list li[data-job-id="{job_id}"]')
    assert row.get_attribute("data-status") == "SUCCESS"
    row.locator(".thumb img").wait_for()

    # Delete it.
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete job").click()
    row.wait_for(state="detached")


def assert_controls_labelled(page) -> None:
    """Every form control has a label (or aria-label) and every button a name; none is taken
    out of the tab order."""
    missing = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button')].filter(e => {
            if (e.type === 'hidden') return false;
            if (e.tabIndex < 0) return true;
            const name = e.getAttribute('aria-label') || (e.labels && e.labels.length) ||
                         (e.tagName === 'BUTTON' && e.textContent.trim());
            return !name;
        }).map(e => e.outerHTML.slice(0, 120))"""
    )
    assert not missing, missing


def open_volume_job(page, anatomical_nii, operation="blur", params=None) -> str:
    job_id = submit_job(page, [anatomical_nii], operation, params)
    wait_job_status(page, "SUCCESS")
    page.locator('.viewer3d[data-state="ready"]').wait_for(timeout=JOB_TIMEOUT)
    return job_id


def canvas_stats(page, path) -> dict[str, float]:
    page.wait_for_timeout(500)  # let NiiVue finish its draw
    return pixel_stats(page.locator(".nv-main").screenshot(path=str(path)))


def test_nifti_volume_drawn_by_niivue(page, anatomical_nii, shots):
    sign_in(page, new_user("nii"))
    open_volume_job(page, anatomical_nii, "blur", {"Sigma": "2"})
    # The output alone (not overlaid on the input).
    page.get_by_label("Overlay result on input").uncheck()
    page.locator('.viewer3d[data-state="ready"][data-volumes="1"]').wait_for()
    assert page.locator(".nv-stage .viewer-status.error").count() == 0

    page.get_by_role("button", name="Multiplanar").click()
    s = canvas_stats(page, shots / "nifti-multiplanar.png")
    assert s["nonblack"] > 0.05 and s["distinct"] > 50 and s["std"] > 10, s

    page.get_by_role("button", name="Axial").click()
    assert page.get_by_role("button", name="Axial").get_attribute("aria-pressed") == "true"
    s_axial = canvas_stats(page, shots / "nifti-axial.png")
    assert s_axial["nonblack"] > 0.05, s_axial
    # Slice scrolling with the slider changes the picture.
    slider = page.get_by_label("Slice", exact=True)
    slider.focus()
    page.keyboard.press("Home")
    first = page.locator(".nv-main").screenshot()
    page.keyboard.press("End")
    page.wait_for_timeout(300)
    last = page.locator(".nv-main").screenshot()
    assert first != last

    # A window typed in, then colormap (which keeps the window).
    page.get_by_label("C", exact=True).fill("400")
    page.get_by_label("C", exact=True).press("Enter")
    page.get_by_label("W", exact=True).fill("1800")
    page.get_by_label("W", exact=True).press("Enter")
    page.get_by_label("Colormap", exact=True).select_option("hot")
    assert page.get_by_label("C", exact=True).input_value() == "400"
    assert page.get_by_label("W", exact=True).input_value() == "1800"
    page.get_by_label("Window", exact=True).select_option("p1_99")
    s_hot = canvas_stats(page, shots / "nifti-axial-hot.png")
    assert s_hot["colour"] > 0.02, s_hot

    page.get_by_role("button", name="3D").click()
    s3d = canvas_stats(page, shots / "nifti-render3d.png")
    assert s3d["nonblack"] > 0.03 and s3d["distinct"] > 50, s3d


def test_volume_result_overlaid_on_input(page, anatomical_nii, shots):
    sign_in(page, new_user("ovl"))
    open_volume_job(page, anatomical_nii, "blur", {"Sigma": "3"})
    # A non-mask result (a blurred copy) is first shown alone in grey; the overlay is one click.
    page.locator('.viewer3d[data-state="ready"][data-volumes="1"]').wait_for()
    assert not page.get_by_label("Overlay result on input").is_checked()
    page.get_by_label("Overlay result on input").check()
    page.locator('.viewer3d[data-state="ready"][data-volumes="2"]').wait_for()
    page.get_by_role("button", name="Axial").click()
    page.get_by_label("Crosshair").uncheck()  # the red crosshair would count as colour
    opacity = page.get_by_label("Opacity")
    opacity.fill("0")
    plain = canvas_stats(page, shots / "overlay-opacity-0.png")
    opacity.fill("1")
    full = canvas_stats(page, shots / "overlay-opacity-1.png")
    opacity.fill("0.5")
    canvas_stats(page, shots / "overlay-opacity-0.5.png")
    page.screenshot(path=str(shots / "overlay-page.png"))
    assert plain["nonblack"] > 0.05, plain
    # The input alone is grey; the "warm" overlay adds colour.
    assert plain["colour"] < 0.01, plain
    assert full["colour"] > 0.05, full
    page.get_by_label("Crosshair").check()
    assert_controls_labelled(page)


def test_threshold_mask_overlaid_on_input(page, anatomical_nii, shots):
    page.goto("/?debug")
    sign_in(page, new_user("mask"))
    open_volume_job(page, anatomical_nii, "threshold")  # Otsu's threshold by default
    page.locator('.viewer3d[data-volumes="2"]').wait_for()
    # The input in grey underneath, the mask on top in a colour map, see-through.
    layers = page.evaluate("() => window.niivue.volumes.map(v => [v.colormap, v.opacity])")
    assert layers[0][0] == "gray" and layers[1][0] != "gray" and 0 < layers[1][1] < 1, layers
    page.get_by_role("button", name="Axial").click()
    s = canvas_stats(page, shots / "mask-overlay.png")
    assert s["colour"] > 0.01 and s["distinct"] > 50, s  # coloured mask over a grey anatomy


def test_unsupported_file_shows_clear_error(page, text_file, shots):
    sign_in(page, new_user("txt"))
    page.set_input_files("#file-input", str(text_file))
    page.get_by_role("button", name="Upload and run").click()
    err = page.get_by_test_id("upload-error")
    err.wait_for()
    text = err.inner_text()
    page.screenshot(path=str(shots / "unsupported-file.png"))
    assert "415" in text and "notes.txt" in text, text
    assert page.locator(".job-list li").count() == 0
    # No job appeared in the list.
    assert "No jobs yet" in page.locator(".jobs-panel").inner_text()


def test_switch_user_hides_previous_jobs(page, sample_png, shots):
    alice, bob = new_user("alice"), new_user("bob")
    sign_in(page, alice)
    job_id = submit_job(page, [sample_png], "blur")
    wait_job_status(page, "SUCCESS")
    assert page.locator(f'.job-list li[data-job-id="{job_id}"]').count() == 1

    sign_in(page, bob)
    page.get_by_text("No jobs yet").wait_for()
    assert page.locator(".job-list li").count() == 0
    assert job_id not in page.content()
    page.screenshot(path=str(shots / "switched-user.png"))
    # Bob cannot open Alice's job by its address either.
    page.goto(f"/#job/{job_id}")
    page.get_by_text("No jobs yet").wait_for()
    assert page.locator(".job-detail").count() == 0
    # The user id is remembered across reloads.
    assert page.get_by_label("User ID").input_value() == bob

    sign_in(page, alice)
    page.locator(f'.job-list li[data-job-id="{job_id}"]').wait_for()


def test_job_list_paginates(page, base_url, sample_png):
    user = new_user("pages")
    png = sample_png.read_bytes()
    for i in range(23):
        r = page.request.post(
            base_url + "/jobs",
            headers={"X-User-ID": user},
            multipart={
                "files": {"name": f"p{i}.png", "mimeType": "image/png", "buffer": png},
                "task_type": "grayscale",
                "params": json.dumps({}),
            },
        )
        assert r.status == 202, r.text()
    sign_in(page, user)
    page.wait_for_function("() => document.querySelectorAll('.job-list li').length === 20")
    more = page.get_by_role("button", name="Load more")
    more.click()
    page.wait_for_function("() => document.querySelectorAll('.job-list li').length === 23")
    assert more.is_hidden()


def test_cancel_job(page, anatomical_nii):
    """Cancel is offered while a job runs; after it the job is terminal and the button is off."""
    sign_in(page, new_user("cancel"))
    submit_job(page, [anatomical_nii] * 3, "blur", {"Sigma": "8"})
    cancel = page.get_by_role("button", name="Cancel job")
    start = time.monotonic()
    # The job may finish between a check and a click, so click only while it is enabled.
    cancel.evaluate("b => { if (!b.disabled) b.click(); }")
    terminal = ", ".join(f'.job-detail[data-status="{s}"]' for s in ("CANCELLED", "SUCCESS", "FAILED"))
    page.locator(terminal).wait_for(timeout=JOB_TIMEOUT)
    assert cancel.is_disabled()
    assert time.monotonic() - start < JOB_TIMEOUT / 1000


def test_multi_file_job_shows_each_file_and_task(page, sample_png, tmp_path):
    from PIL import Image

    second = tmp_path / "second.png"
    Image.open(sample_png).rotate(90).save(second)
    sign_in(page, new_user("multi"))
    submit_job(page, [sample_png, second], "grayscale")
    rows = page.locator(".file-row [role=progressbar]")
    assert rows.count() == 2
    assert [rows.nth(i).get_attribute("aria-valuenow") for i in range(2)] == ["100", "100"]
    wait_job_status(page, "SUCCESS")
    tasks = page.locator(".task-gallery li")
    assert tasks.count() == 2
    assert {tasks.nth(i).get_attribute("data-status") for i in range(2)} == {"SUCCESS"}
    # Each task's result can be opened.
    tasks.nth(1).get_by_role("button", name=re.compile("View result")).click()
    page.get_by_role("heading", name=re.compile(r"Result: second\.png")).wait_for()
    page.locator('.viewer2d[data-state="ready"]').wait_for()
