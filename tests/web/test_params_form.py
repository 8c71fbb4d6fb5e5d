"""The parameters form built from an operation's schema: number fields refuse what the browser
cannot parse, and presets fill the fields. Screenshots: test-output/web/."""

from __future__ import annotations

import pytest

from .conftest import new_user, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


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


def test_the_catalogue_operations_and_the_window_presets_are_in_the_form(page):
    """The form is built from GET /operations alone: the operations of CONTRACT section 4 are all
    offered, and the window's CT presets fill center and width in HU."""
    sign_in(page, new_user("catalogue"))
    operation = page.get_by_label("Operation")
    operation.locator('option[value="anonymize"]').wait_for(state="attached")  # the catalogue has loaded
    offered = operation.locator("option").evaluate_all("os => os.map(o => o.value)")
    new = ["window", "normalize", "denoise", "edges", "equalize", "mip", "reorient", "convert", "anonymize"]
    assert set(new) <= set(offered)
    operation.select_option("window")
    preset = page.get_by_label("Preset")
    preset.locator("option", has_text="Lung").wait_for(state="attached")
    titles = preset.locator("option").evaluate_all("os => os.map(o => o.textContent)")
    expected = {"Brain (40/80)", "Subdural (75/215)", "Stroke (40/40)", "Lung (-600/1500)",
                "Mediastinum (50/350)", "Abdomen (50/400)", "Liver (30/150)", "Bone (400/1800)",
                "Soft tissue (40/400)"}
    assert expected <= set(titles)
    center = page.locator("#params").get_by_label("Center").first
    width = page.locator("#params").get_by_label("Width").first
    for title, values in (("Lung (-600/1500)", ("-600", "1500")), ("Subdural (75/215)", ("75", "215"))):
        preset.select_option(label=title)
        assert (center.input_value(), width.input_value()) == values
    named = page.locator("#params").get_by_label("Named window")
    values = named.locator("option").evaluate_all("os => os.map(o => o.textContent)")
    assert {"brain", "subdural", "stroke", "lung", "mediastinum", "abdomen", "liver", "bone",
            "soft_tissue"} <= set(values)
