"""DICOM inputs in the browser: the processor's role "input" output (a PNG for 2D, a .nii.gz for
volumes) gives the before/after slider its "before" image and the volume overlay its base; and
the parameters form follows the schema's x-order. Screenshots: test-output/web/."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from .conftest import new_user, pixel_stats, sign_in
from .test_ui import before_and_after, canvas_stats, submit_job, wait_job_status

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path, name
    return Path(path)


def _grey(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L")).astype(float)


def _detail(grey: np.ndarray) -> float:
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def test_dicom_2d_before_after_uses_the_input_png(page, base_url, shots):
    sign_in(page, new_user("dcm2d"))
    submit_job(page, [_pydicom_file("CT_small.dcm")], "blur", {"Sigma": "3"})
    wait_job_status(page, "SUCCESS")
    page.locator('.viewer2d[data-state="ready"]').wait_for()
    page.locator('.viewer2d[data-compare="ready"]').wait_for()

    slider = page.get_by_label("Before / after")
    assert slider.is_enabled()
    # Before and after are the processor's real-unit files (HU), one window over both.
    viewer = page.locator(".viewer2d")
    assert viewer.get_attribute("data-before-src") == "CT_small_input_values.nii.gz"
    assert viewer.get_attribute("data-after-src") == "CT_small_values.nii.gz"
    assert viewer.get_attribute("data-unit") == "HU"
    page.screenshot(path=str(shots / "dicom-blur-before-after.png"))

    before, after = before_and_after(page, shots, "dicom")
    assert after != before
    sharp, blurred = pixel_stats(before), pixel_stats(after)
    assert sharp["nonblack"] > 0.2 and blurred["nonblack"] > 0.2, (sharp, blurred)
    # One grey scale (the same window): the same brightness overall, but the blur took the detail.
    a, b = _grey(before), _grey(after)
    assert abs(a.mean() - b.mean()) < 8, (a.mean(), b.mean())
    assert _detail(b) < 0.7 * _detail(a), (_detail(a), _detail(b))

    # The input PNG is listed with the downloads.
    link = page.get_by_role("link", name="Download CT_small_input.png")
    href = link.get_attribute("href")
    resp = page.request.get(base_url + href if href.startswith("/") else href)
    assert resp.ok and resp.body()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dicom_volume_result_overlaid_on_its_input(page, shots):
    sign_in(page, new_user("dcm3d"))
    submit_job(page, [_pydicom_file("rtdose.dcm")], "blur", {"Sigma": "10"})
    wait_job_status(page, "SUCCESS")
    # Not a mask: the result alone first (overlay off), then overlaid on its input.
    page.locator('.viewer3d[data-state="ready"][data-volumes="1"]').wait_for(timeout=90_000)
    assert not page.get_by_label("Overlay result on input").is_checked()
    page.get_by_label("Overlay result on input").check()
    page.locator('.viewer3d[data-state="ready"][data-volumes="2"]').wait_for(timeout=90_000)
    assert page.locator(".nv-stage .viewer-status.error").count() == 0
    page.get_by_role("button", name="Axial").click()
    page.get_by_label("Crosshair").uncheck()
    page.get_by_label("Opacity").fill("0")
    plain = canvas_stats(page, shots / "dicom-volume-input.png")
    page.get_by_label("Opacity").fill("1")
    full = canvas_stats(page, shots / "dicom-volume-overlay.png")
    assert plain["nonblack"] > 0.02, plain
    assert plain["colour"] < 0.01 and full["colour"] > 0.02, (plain, full)


def _param_order(page) -> list[str]:
    return page.locator("#params [data-param]").evaluate_all("els => els.map(e => e.dataset.param)")


def test_params_form_follows_the_schema_order(page, shots):
    sign_in(page, new_user("form"))
    page.get_by_label("Operation").select_option("blur")
    order = _param_order(page)
    assert order == ["sigma", "output_format"], order
    page.get_by_label("Operation").select_option("resize")
    order = _param_order(page)
    assert order[:3] == ["width", "height", "keep_aspect"] and order[-1] == "output_format", order
    # A checkbox sits before its label on one line, not stretched across the panel above it.
    box = page.get_by_label("Keep aspect").bounding_box()
    label = page.locator('#params [data-param="keep_aspect"] label').bounding_box()
    assert box["width"] < 30 and box["x"] < label["x"] and abs(box["y"] - label["y"]) < label["height"]
    page.locator("#params").screenshot(path=str(shots / "params-resize.png"))
