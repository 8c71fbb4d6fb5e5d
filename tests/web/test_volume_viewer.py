"""The NiiVue volume viewer: the window applies to what is seen (base and non-mask overlay) and
survives overlay toggles, radiological convention, right-drag windowing, and a frame slider for
4D volumes. Screenshots: test-output/web/."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import new_user, sign_in
from .test_ui import open_volume_job

pytestmark = [pytest.mark.browser, pytest.mark.slow]


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

    page.get_by_label("C", exact=True).fill("400")  # 400/1800 -> -500..1300
    page.get_by_label("C", exact=True).press("Enter")
    page.get_by_label("W", exact=True).fill("1800")
    page.get_by_label("W", exact=True).press("Enter")
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
    page.get_by_label("Window", exact=True).select_option("p5_95")
    start = (
        page.get_by_label("C", exact=True).input_value(),
        page.get_by_label("W", exact=True).input_value(),
    )
    page.get_by_role("button", name="Axial").click()
    box = page.locator(".nv-main").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down(button="right")
    page.mouse.move(x + 30, y - 20, steps=6)
    page.mouse.up(button="right")
    page.wait_for_timeout(200)
    c = float(page.get_by_label("C", exact=True).input_value())
    w = float(page.get_by_label("W", exact=True).input_value())
    assert (c, w) != tuple(float(v) for v in start), (c, w)
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
