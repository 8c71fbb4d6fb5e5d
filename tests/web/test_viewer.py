"""The viewer a radiologist works in (issue "A viewer radiologists would choose"): a viewer-first
layout at 1366x768, 1440x900 and 1920x1080 with nothing overlapping, window/level on 2D DICOM in
real units (the canvas read back against the window), presets by modality, the 2x2 multiplanar
grid, keyboard slices, hover readouts against nibabel, measurements against the pixel spacing
that pydicom reads, volumes side by side, the studies browser, shortcuts, and the params that
apply. Screenshots: test-output/web/."""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from .conftest import new_user, show_side_panel

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JOB_TIMEOUT = 90  # s
SIZES = [(1366, 768), (1440, 900), (1920, 1080)]


def _pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path, name
    return Path(path)


def _post_job(
    page, base_url: str, user: str, files: list[tuple[str, bytes]], op: str, params: dict | None = None
) -> dict:
    ((name, data),) = files
    r = page.request.post(
        base_url + "/jobs",
        headers={"X-User-ID": user},
        multipart={
            "files": {"name": name, "mimeType": "application/octet-stream", "buffer": data},
            "task_type": op,
            "params": json.dumps(params or {}),
        },
    )
    assert r.status == 202, r.text()
    return _wait(page, base_url, user, r.json()["job_id"])


def _post_many(page, base_url: str, user: str, files: list[tuple[str, bytes]], op: str) -> dict:
    """POST /jobs with several files (multipart built by hand: one `files` part per file)."""
    boundary = "----viewertest" + str(time.time_ns())
    parts = []
    for name, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="task_type"\r\n\r\n{op}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    r = page.request.post(
        base_url + "/jobs",
        headers={"X-User-ID": user, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        data=body,
    )
    assert r.status == 202, r.text()
    return _wait(page, base_url, user, r.json()["job_id"])


def _wait(page, base_url: str, user: str, job_id: str) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        job = page.request.get(f"{base_url}/jobs/{job_id}", headers={"X-User-ID": user}).json()
        if job["status"] in ("SUCCESS", "FAILED", "CANCELLED"):
            assert job["status"] == "SUCCESS", job
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish")


def _open(page, user: str, job_id: str, kind: str) -> None:
    page.add_init_script(f"localStorage.setItem('radiology.userId', {json.dumps(user)})")
    page.goto(f"/?debug#job/{job_id}")
    if kind == "2d":
        page.locator('.viewer2d[data-state="ready"]').wait_for(timeout=JOB_TIMEOUT * 1000)
    else:
        page.locator('.viewer3d[data-state="ready"]').wait_for(timeout=JOB_TIMEOUT * 1000)


def _output(job: dict, role: str, task: int = 0) -> dict:
    return next(o for o in job["task_results"][task]["result"]["outputs"] if o["role"] == role)


def _download(page, base_url: str, url: str) -> bytes:
    resp = page.request.get(base_url + url if url.startswith("/") else url)
    assert resp.ok
    return resp.body()


def _nifti(data: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


@pytest.fixture(scope="module")
def jobs(browser, base_url: str) -> dict:
    """One user with a 2D CT job and a volume job, made through the API."""
    context = browser.new_context(base_url=base_url)
    page = context.new_page()
    user = new_user("viewer")
    ct = _post_job(
        page,
        base_url,
        user,
        [("CT_small.dcm", _pydicom_file("CT_small.dcm").read_bytes())],
        "blur",
        {"sigma": 1},
    )
    anat = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    vol = _post_job(page, base_url, user, [("anatomical.nii", anat.read_bytes())], "blur", {"sigma": 2})
    context.close()
    return {"user": user, "ct": ct, "vol": vol}


def _boxes_overlap(a: dict, b: dict) -> bool:
    return (
        a["x"] < b["x"] + b["width"] - 0.5
        and b["x"] < a["x"] + a["width"] - 0.5
        and a["y"] < b["y"] + b["height"] - 0.5
        and b["y"] < a["y"] + a["height"] - 0.5
    )


OVERLAPS_JS = """() => {
  const visible = e => { const r = e.getBoundingClientRect(); const s = getComputedStyle(e);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && e.offsetParent !== null; };
  const els = [...document.querySelectorAll(
    'header button, header input, header label, .detail-head button, .detail-head .bar, ' +
    '.toolbar button, .toolbar input, .toolbar select, .toolbar label, .toolbar output, ' +
    '.result-side button, .readout span, .nv-foot .hint, ' +
    '.job-row .badge, .job-row .bar, .job-row-title, .job-row-time')].filter(visible);
  const out = [];
  for (let i = 0; i < els.length; i++) for (let j = i + 1; j < els.length; j++) {
    const a = els[i].getBoundingClientRect(), b = els[j].getBoundingClientRect();
    if (els[i].contains(els[j]) || els[j].contains(els[i])) continue;
    const seg = els[i].closest('.segmented');  // a segmented control's buttons share their borders
    if (seg && seg === els[j].closest('.segmented')) continue;
    if (a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5)
      out.push([els[i].outerHTML.slice(0, 80), els[j].outerHTML.slice(0, 80)]);
  }
  const off = els.filter(e => { const r = e.getBoundingClientRect();
    return r.right > innerWidth + 0.5 || r.bottom > innerHeight + 0.5 || r.left < -0.5 || r.top < -0.5; })
    .map(e => e.outerHTML.slice(0, 80));
  return {overlaps: out, offscreen: off};
}"""


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_viewer_first_layout_without_overlaps(browser, base_url, jobs, shots, size):
    width, height = size
    errors: list[str] = []
    for kind, job in (("2d", jobs["ct"]), ("volume", jobs["vol"])):
        context = browser.new_context(viewport={"width": width, "height": height}, base_url=base_url)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        _open(page, jobs["user"], job["job_id"], kind)
        page.wait_for_timeout(600)
        stage = page.locator(".viewport2d" if kind == "2d" else ".nv-stage").bounding_box()
        # the image area: at least half the window, all of it on screen, no page scrolling
        assert stage["width"] * stage["height"] >= 0.5 * width * height, (kind, stage)
        assert stage["x"] >= 0 and stage["y"] >= 0
        assert stage["x"] + stage["width"] <= width and stage["y"] + stage["height"] <= height
        assert page.evaluate("() => document.scrollingElement.scrollHeight <= innerHeight + 1")
        # the side panel folded away when the result opened
        assert page.locator("#main").get_attribute("data-side") == "closed"
        found = page.evaluate(OVERLAPS_JS)
        assert not found["overlaps"], found["overlaps"]
        assert not found["offscreen"], found["offscreen"]
        page.screenshot(path=str(shots / f"layout-{kind}-{width}x{height}.png"))
        # With the side panel open: the job rows' badges and bars stay inside their cards.
        show_side_panel(page)
        page.wait_for_timeout(300)
        for row in page.locator(".job-row").all():
            card = row.bounding_box()
            for part in row.locator(".badge, .bar").all():
                b = part.bounding_box()
                assert card["x"] <= b["x"] and b["x"] + b["width"] <= card["x"] + card["width"] + 0.5, (
                    card,
                    b,
                )
                assert card["y"] <= b["y"] and b["y"] + b["height"] <= card["y"] + card["height"] + 0.5, (
                    card,
                    b,
                )
        found = page.evaluate(OVERLAPS_JS)
        assert not found["overlaps"], found["overlaps"]
        page.screenshot(path=str(shots / f"layout-{kind}-{width}x{height}-panel.png"))
        context.close()
    assert not errors, errors


def _pixel_centre(page, col: int, row: int) -> tuple[float, float]:
    """Screen position of a 2D image pixel's centre, from the viewer's transform (scale, pan)."""
    vp = page.get_by_test_id("viewer2d")
    box = vp.bounding_box()
    scale, pan_x, pan_y = (float(v) for v in vp.get_attribute("data-view").split(","))
    return box["x"] + pan_x + (col + 0.5) * scale, box["y"] + pan_y + (row + 0.5) * scale


def _canvas_grey(page, x: float, y: float) -> int:
    """The grey level the 2D canvas shows at a screen point (read back from the canvas)."""
    return page.evaluate(
        """([x, y]) => { const c = document.querySelector('.view2d-canvas');
        const r = c.getBoundingClientRect(); const d = devicePixelRatio;
        const px = c.getContext('2d').getImageData(
          Math.floor((x - r.left) * d), Math.floor((y - r.top) * d), 1, 1).data;
        return [px[0], px[1], px[2]]; }""",
        [x, y],
    )


def test_2d_dicom_window_level_in_hounsfield_units(page, base_url, jobs, shots):
    """The displayed grey level of a pixel follows the window typed in, in HU: black at or below
    C - W/2, white at or above C + W/2, linear between; the hover shows the pixel's HU."""
    ct = jobs["ct"]
    values = _nifti(_download(page, base_url, _output(ct, "values")["url"]))
    hu = np.asanyarray(values.dataobj)[:, :, 0].T  # (row, column)
    _open(page, jobs["user"], ct["job_id"], "2d")
    viewer = page.locator(".viewer2d")
    assert viewer.get_attribute("data-unit") == "HU"
    # CT: the CT presets are offered (after the file's or the 1-99 % window)
    presets = viewer.get_attribute("data-presets").split()
    assert {"brain", "lung", "bone", "abdomen", "p1_99", "p5_95"} <= set(presets)
    page.get_by_label("Before / after").fill("0")  # the result all over
    pixels = [(64, 64), (30, 90), (100, 40), (20, 20)]
    for c, w in [(40, 400), (-600, 1500), (1000, 50)]:
        page.get_by_label("C", exact=True).fill(str(c))
        page.get_by_label("C", exact=True).press("Enter")
        page.get_by_label("W", exact=True).fill(str(w))
        page.get_by_label("W", exact=True).press("Enter")
        lo, hi = c - w / 2, c + w / 2
        for col, row in pixels:
            x, y = _pixel_centre(page, col, row)
            page.mouse.move(x, y)
            readout = page.get_by_test_id("readout")
            assert readout.get_attribute("data-col") == str(col) and readout.get_attribute("data-row") == str(
                row
            )
            assert float(readout.get_attribute("data-value")) == pytest.approx(float(hu[row, col]), abs=1e-3)
            assert "HU" in readout.locator('[data-field="value"]').inner_text()
            expected = round(min(max((float(hu[row, col]) - lo) / (hi - lo), 0), 1) * 255)
            grey = _canvas_grey(page, x, y)
            assert grey[0] == grey[1] == grey[2] and abs(grey[0] - expected) <= 1, (
                c,
                w,
                col,
                row,
                grey,
                expected,
            )
    # The input (before) side, in HU too, under the same window.
    input_values = _nifti(_download(page, base_url, _output(ct, "input_values")["url"]))
    input_hu = np.asanyarray(input_values.dataobj)[:, :, 0].T
    page.get_by_label("Before / after").fill("100")  # the input all over
    for col, row in pixels:
        x, y = _pixel_centre(page, col, row)
        page.mouse.move(x, y)
        readout = page.get_by_test_id("readout")
        shown = readout.locator('[data-field="input-value"]').inner_text()  # "Input -762 HU"
        assert float(shown.split()[1]) == pytest.approx(float(input_hu[row, col]), abs=1e-3), shown
        expected = round(min(max((float(input_hu[row, col]) - lo) / (hi - lo), 0), 1) * 255)
        grey = _canvas_grey(page, x, y)
        assert abs(grey[0] - expected) <= 1, (col, row, grey, expected)
    # A window far above the values saturates: the page says so.
    page.get_by_label("C", exact=True).fill("-3000")
    page.get_by_label("C", exact=True).press("Enter")
    page.get_by_label("W", exact=True).fill("10")
    page.get_by_label("W", exact=True).press("Enter")
    assert "white" in page.get_by_test_id("saturation").inner_text()
    # Reset: back to the default (first) window.
    page.get_by_role("button", name="Reset").click()
    assert page.get_by_label("Window", exact=True).input_value() == presets[0]
    page.screenshot(path=str(shots / "viewer2d-window-hu.png"))


def test_presets_follow_the_modality(page, base_url, shots):
    """MR gets percentile windows only (no HU presets), and a CT-like window on it says that it
    saturates the image; a NIfTI volume without a modality gets no CT presets either."""
    user = new_user("mr")
    mr = _post_job(
        page,
        base_url,
        user,
        [("MR_small.dcm", _pydicom_file("MR_small.dcm").read_bytes())],
        "blur",
        {"sigma": 0.5},
    )
    assert mr["task_results"][0]["result"]["metadata"]["modality"] == "MR"
    _open(page, user, mr["job_id"], "2d")
    presets = page.locator(".viewer2d").get_attribute("data-presets").split()
    assert "brain" not in presets and "bone" not in presets
    assert {"p1_99", "p5_95", "full"} <= set(presets)
    options = page.get_by_label("Window", exact=True).locator("option").all_inner_texts()
    assert any("1–99 %" in o for o in options) and any("5–95 %" in o for o in options)
    # The "brain" window typed in by hand: MR values are far above it, and the page says so.
    page.get_by_label("C", exact=True).fill("40")
    page.get_by_label("C", exact=True).press("Enter")
    page.get_by_label("W", exact=True).fill("80")
    page.get_by_label("W", exact=True).press("Enter")
    warning = page.get_by_test_id("saturation").inner_text()
    assert "white" in warning, warning
    page.screenshot(path=str(shots / "viewer2d-mr-saturated.png"))
    # Presets by number key: 2 is the second entry of the list.
    page.get_by_test_id("viewer2d").focus()
    page.keyboard.press("2")
    assert page.get_by_label("Window", exact=True).input_value() == presets[1]
    assert page.get_by_test_id("saturation").inner_text() == ""


def test_mpr_grid_keys_orientation_and_hover_value(page, base_url, jobs, shots):
    vol = jobs["vol"]
    processed = _nifti(_download(page, base_url, _output(vol, "primary")["url"]))
    data = np.asanyarray(processed.dataobj)
    _open(page, jobs["user"], vol["job_id"], "volume")
    viewer = page.locator(".viewer3d")
    presets = viewer.get_attribute("data-presets").split()
    assert presets[0] == "p1_99" and "brain" not in presets  # no modality: no CT presets
    assert page.get_by_role("button", name="Multiplanar").get_attribute("aria-pressed") == "true"
    page.wait_for_timeout(500)
    tiles = page.evaluate(
        "() => window.niivue.screenSlices.map(s => ({t: s.axCorSag, ltwh: s.leftTopWidthHeight,"
        " fov: s.fovMM}))"
    )
    canvas = page.evaluate("() => [window.niivue.canvas.width, window.niivue.canvas.height]")
    assert sorted(t["t"] for t in tiles) == [0, 1, 2, 4]  # axial, coronal, sagittal, 3D
    # four equal quadrants: each tile centred in its own quarter of the canvas
    quarters = set()
    for t in tiles:
        left, top, w, h = t["ltwh"]
        cx, cy = left + w / 2, top + h / 2
        q = (int(cx // (canvas[0] / 2)), int(cy // (canvas[1] / 2)))
        quarters.add(q)
        if t["t"] != 4:
            assert (
                abs(cx - (q[0] + 0.5) * canvas[0] / 2) < 2 and abs(cy - (q[1] + 0.5) * canvas[1] / 2) < 2
            ), t
    assert quarters == {(0, 0), (1, 0), (0, 1), (1, 1)}
    # one mm scale for the three planes
    scales = [t["ltwh"][2] / abs(t["fov"][0]) for t in tiles if t["t"] != 4] + [
        t["ltwh"][3] / abs(t["fov"][1]) for t in tiles if t["t"] != 4
    ]
    assert max(scales) - min(scales) < 0.01 * max(scales), scales
    assert page.evaluate("() => window.niivue.opts.isOrientationTextVisible") is True
    page.get_by_label("Crosshair").uncheck()
    page.locator(".nv-stage").screenshot(path=str(shots / "mpr-grid.png"))
    # The orientation letters are legible: drawn in a bright colour (no grey anatomy or black
    # background has it) at each edge's middle of the three planes.
    from PIL import Image

    png = page.locator(".nv-main").screenshot(scale="css")
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    dpr = page.evaluate("devicePixelRatio")
    font = page.evaluate("() => window.niivue.fontPx") / dpr
    assert font >= 15, font

    def letter_pixels(x0: float, x1: float, y0: float, y1: float) -> int:
        part = shot[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1]
        r, g, b = part[..., 0], part[..., 1], part[..., 2]
        return int(((r > 180) & (g > 120) & (r - b > 90)).sum())

    for t in tiles:
        if t["t"] == 4:
            continue
        left, top, w, h = (v / dpr for v in t["ltwh"])
        mid_x, mid_y = left + w / 2, top + h / 2
        sides = {
            "top": letter_pixels(mid_x - font, mid_x + font, top, top + 1.5 * font),
            "bottom": letter_pixels(mid_x - font, mid_x + font, top + h - 1.5 * font, top + h),
            "left": letter_pixels(left, left + 1.5 * font, mid_y - font, mid_y + font),
            "right": letter_pixels(left + w - 1.5 * font, left + w, mid_y - font, mid_y + font),
        }
        assert all(n >= 5 for n in sides.values()), (t["t"], sides)
    page.get_by_label("Crosshair").check()

    # Hover over the axial tile: position (RAS and LPS) and the value of that voxel, as text.
    axial = next(t for t in tiles if t["t"] == 0)
    box = page.locator(".nv-main").bounding_box()
    dpr = page.evaluate("devicePixelRatio")
    left, top, w, h = axial["ltwh"]
    for fx, fy in [(0.5, 0.5), (0.3, 0.7), (0.62, 0.41)]:
        page.mouse.move(box["x"] + (left + fx * w) / dpr, box["y"] + (top + fy * h) / dpr)
        readout = page.get_by_test_id("readout")
        page.wait_for_function("() => document.querySelector('.readout').dataset.inside === 'true'")
        i, j, k = (int(v) for v in readout.get_attribute("data-voxel").split(","))
        assert float(readout.get_attribute("data-value")) == pytest.approx(
            float(data[i, j, k]), rel=1e-5, abs=1e-3
        )
        ras = [
            float(v)
            for v in readout.locator('[data-field="ras"]').inner_text().replace(",", " ").split()[1:4]
        ]
        lps = [
            float(v)
            for v in readout.locator('[data-field="lps"]').inner_text().replace(",", " ").split()[1:4]
        ]
        # the point lies within the voxel whose value is shown (half a voxel either way)
        centre = processed.affine @ [i, j, k, 1]
        assert np.all(
            np.abs(np.array(ras) - centre[:3]) <= np.abs(np.diag(processed.affine)[:3]) / 2 + 0.11
        ), (ras, centre)
        assert lps == pytest.approx([-ras[0], -ras[1], ras[2]], abs=0.11)

    # Keys go to the viewer: slices move, the page does not scroll.
    start = int(viewer.get_attribute("data-slice").split()[1])
    page.keyboard.press("ArrowUp")
    assert int(viewer.get_attribute("data-slice").split()[1]) == start + 1
    page.keyboard.press("PageDown")
    assert int(viewer.get_attribute("data-slice").split()[1]) == max(0, start + 1 - 10)
    page.keyboard.press("End")
    assert int(viewer.get_attribute("data-slice").split()[1]) == data.shape[2] - 1
    assert page.evaluate("() => scrollY === 0 && document.querySelector('.detail-panel').scrollTop === 0")
    # views by key
    page.keyboard.press("c")
    assert page.get_by_role("button", name="Coronal").get_attribute("aria-pressed") == "true"
    page.keyboard.press("m")
    assert page.get_by_role("button", name="Multiplanar").get_attribute("aria-pressed") == "true"


def test_volume_before_after_side_by_side_linked(page, jobs, shots):
    _open(page, jobs["user"], jobs["vol"]["job_id"], "volume")
    viewer = page.locator(".viewer3d")
    page.keyboard.press("b")
    page.locator('.viewer3d[data-side-by-side="true"]').wait_for()
    assert page.locator(".nv-pane-input").is_visible()
    page.get_by_role("button", name="Axial").click()
    page.get_by_label("C", exact=True).fill("5000")
    page.get_by_label("C", exact=True).press("Enter")
    page.get_by_label("W", exact=True).fill("4000")
    page.get_by_label("W", exact=True).press("Enter")
    cal = page.evaluate(
        "() => [window.niivue, window.niivueInput].map(nv => [nv.volumes[0].cal_min, nv.volumes[0].cal_max])"
    )
    assert cal == [[3000, 7000], [3000, 7000]]  # one window on both
    # a slice step on the result moves the input too (linked by position in mm)
    page.locator(".nv-main").click()
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    page.wait_for_timeout(300)
    mm = page.evaluate(
        "() => [window.niivue, window.niivueInput]"
        ".map(nv => Array.from(nv.frac2mm(nv.scene.crosshairPos)).slice(0, 3))"
    )
    assert mm[0] == pytest.approx(mm[1], abs=0.01), mm
    assert page.evaluate("() => window.niivueInput.opts.sliceType") == 0
    # Zoom: keys, buttons and the wheel in Pan/zoom mode zoom the result and the input alike
    # (and the wheel does not move the slice then).
    zoom_js = "() => [window.niivue, window.niivueInput].map(nv => nv.scene.pan2Dxyzmm[3])"
    page.locator(".nv-main").focus()
    page.keyboard.press("+")
    page.keyboard.press("+")
    assert page.evaluate(zoom_js) == pytest.approx([1.5625, 1.5625])
    assert page.locator(".viewer3d .zoom-text").inner_text() == "156 %"
    page.get_by_role("button", name="Zoom out (-)").click()
    assert page.evaluate(zoom_js) == pytest.approx([1.25, 1.25])
    slice_before = viewer.get_attribute("data-slice")
    page.get_by_label("Left drag").select_option(label="Pan/zoom")
    box = page.locator(".nv-main").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -100)
    page.wait_for_timeout(300)
    assert page.evaluate(zoom_js) == pytest.approx([1.5625, 1.5625])
    assert viewer.get_attribute("data-slice") == slice_before
    page.locator(".nv-stage").screenshot(path=str(shots / "volume-side-by-side-zoomed.png"))
    page.keyboard.press("0")
    assert page.evaluate(zoom_js) == pytest.approx([1, 1])
    page.keyboard.press("Escape")
    page.locator(".nv-stage").screenshot(path=str(shots / "volume-side-by-side.png"))
    # The overlay: an image result is a light, see-through layer (anatomy shows through).
    page.keyboard.press("b")
    page.locator('.viewer3d[data-side-by-side="false"]').wait_for()
    page.keyboard.press("o")
    page.locator('.viewer3d[data-state="ready"][data-volumes="2"]').wait_for()
    layers = page.evaluate("() => window.niivue.volumes.map(v => [v.colormap, v.opacity])")
    assert layers[0][0] == "gray" and layers[1][0] == "hot" and 0 < layers[1][1] <= 0.4, layers


def _ct_series_zip(slices: int = 10) -> bytes:
    """A ZIP of one CT series (stored values 0..2000 with intercept -1024: -1024..976 HU), with
    the file's window 40/400."""
    from tests.processor.imaging.helpers import ct_slice

    rng = np.random.default_rng(11)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k in range(slices):
            raw = ct_slice(
                rng.integers(0, 2000, (40, 48)).astype(np.uint16),
                series_uid="1.2.826.0.1.7.9",
                position=(-20.0, -15.0, 2.5 * k),
                instance=k + 1,
                window=(40, 400),
            )
            zf.writestr(f"ct/{k:02d}.dcm", raw)
    return buf.getvalue()


def test_ct_volume_presets_and_hover_in_hounsfield_units(page, base_url, shots):
    """A CT series as a volume: the file's window first, then the CT presets in HU; the hover
    shows the HU of the voxel under the mouse (against nibabel's array of the result)."""
    user = new_user("ctvol")
    job = _post_job(page, base_url, user, [("ct_series.zip", _ct_series_zip())], "blur", {"sigma": 1})
    meta = job["task_results"][0]["result"]["metadata"]
    assert meta["modality"] == "CT" and meta["units"] == "HU", meta
    processed = _nifti(_download(page, base_url, _output(job, "primary")["url"]))
    data = np.asanyarray(processed.dataobj).astype(float)
    _open(page, user, job["job_id"], "volume")
    viewer = page.locator(".viewer3d")
    presets = viewer.get_attribute("data-presets").split()
    assert presets[0] == "file" and {"brain", "lung", "bone", "p1_99", "p5_95"} <= set(presets), presets
    assert viewer.get_attribute("data-window") == "40,400"
    page.get_by_role("button", name="Axial").click()
    box = page.locator(".nv-main").bounding_box()
    for fx, fy in [(0.5, 0.5), (0.45, 0.6)]:
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_function("() => document.querySelector('.readout').dataset.inside === 'true'")
        readout = page.get_by_test_id("readout")
        i, j, k = (int(v) for v in readout.get_attribute("data-voxel").split(","))
        assert float(readout.get_attribute("data-value")) == pytest.approx(data[i, j, k], abs=0.01)
        assert readout.locator('[data-field="value"]').inner_text().endswith(" HU")
    page.screenshot(path=str(shots / "ct-volume-hu.png"))
    # a window far above every value turns the volume black, and the page says so
    page.get_by_label("C", exact=True).fill("3000")
    page.get_by_label("C", exact=True).press("Enter")
    page.get_by_label("W", exact=True).fill("100")
    page.get_by_label("W", exact=True).press("Enter")
    assert "black" in page.get_by_test_id("saturation").inner_text()
    page.keyboard.press("Escape")
    page.locator(".nv-main").focus()
    page.keyboard.press("r")  # reset: the file's window again, no warning
    assert viewer.get_attribute("data-window") == "40,400"
    assert page.get_by_test_id("saturation").inner_text() == ""


def _drag(page, a: tuple[float, float], b: tuple[float, float]) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=6)
    page.mouse.up()


def test_2d_measurements_in_mm_and_export(page, base_url, jobs, shots):
    """Length in mm by pydicom's PixelSpacing; rectangle statistics against numpy; an angle; the
    list as text and as JSON/CSV downloads."""
    import pydicom

    ds = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
    ct = jobs["ct"]
    hu = np.asanyarray(_nifti(_download(page, base_url, _output(ct, "values")["url"])).dataobj)[:, :, 0].T
    _open(page, jobs["user"], ct["job_id"], "2d")
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Before / after").fill("0")

    page.get_by_role("button", name="Length", exact=True).click()
    _drag(page, _pixel_centre(page, 20, 30), _pixel_centre(page, 100, 90))
    page.get_by_role("button", name="Rectangle").click()
    _drag(page, _pixel_centre(page, 40, 50), _pixel_centre(page, 70, 60))
    page.keyboard.press("g")  # angle: one arm dragged, then a click for the other
    _drag(page, _pixel_centre(page, 90, 30), _pixel_centre(page, 60, 30))
    x, y = _pixel_centre(page, 60, 10)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.up()
    items = page.get_by_test_id("measurements").locator("li")
    items.nth(2).wait_for()
    assert items.count() == 3
    texts = items.all_inner_texts()
    page.screenshot(path=str(shots / "viewer2d-measurements.png"))

    with page.expect_download() as dl:
        page.get_by_role("button", name="Export measurements as JSON").click()
    exported = json.loads(Path(dl.value.path()).read_text())["measurements"]
    length, rect, angle = exported
    (c0, r0), (c1, r1) = length["points"]
    expected = float(np.hypot((c1 - c0) * col_sp, (r1 - r0) * row_sp))
    assert length["lengthUnit"] == "mm" and length["length"] == pytest.approx(expected, rel=1e-4)
    assert abs(c1 - c0 - 80) < 0.6 and abs(r1 - r0 - 60) < 0.6  # the drag's end points
    assert f"Length {round(expected, 2)} mm" in texts[0].replace("\n", " ") or f"{expected:.1f}" in texts[0]
    # rectangle: the pixels whose centres lie inside, from the values file
    (rc0, rr0), (rc1, rr1) = rect["points"]
    cols = np.arange(int(np.ceil(min(rc0, rc1))), int(np.floor(max(rc0, rc1))) + 1)
    rows = np.arange(int(np.ceil(min(rr0, rr1))), int(np.floor(max(rr0, rr1))) + 1)
    inside = hu[np.ix_(rows, cols)].astype(float)
    assert rect["pixels"] == inside.size
    assert rect["mean"] == pytest.approx(inside.mean(), rel=1e-4)
    assert rect["sd"] == pytest.approx(inside.std(ddof=1), rel=1e-3)
    assert rect["min"] == pytest.approx(inside.min()) and rect["max"] == pytest.approx(inside.max())
    assert rect["area"] == pytest.approx(inside.size * row_sp * col_sp, rel=1e-4)
    assert rect["valueUnit"] == "HU" and "HU" in texts[1]
    assert angle["angle"] == pytest.approx(90, abs=1.5)

    with page.expect_download() as dl:
        page.get_by_role("button", name="Export measurements as CSV").click()
    rows_csv = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert [r["tool"] for r in rows_csv] == ["length", "rect", "angle"]
    assert float(rows_csv[0]["length"]) == pytest.approx(expected, rel=1e-4)
    # kept with the job: a reload shows them again
    page.reload()
    page.locator('.viewer2d[data-state="ready"]').wait_for()
    assert page.get_by_test_id("measurements").locator("li").count() == 3


def test_volume_length_measurement_in_mm(page, jobs):
    _open(page, jobs["user"], jobs["vol"]["job_id"], "volume")
    page.get_by_role("button", name="Clear").click()
    page.get_by_role("button", name="Axial").click()
    page.keyboard.press("l")
    assert page.get_by_label("Left drag").input_value() == "2"  # DRAG_MODE.measurement
    box = page.locator(".nv-main").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    _drag(page, (cx - 60, cy), (cx + 60, cy))
    item = page.get_by_test_id("measurements").locator("li").first
    item.wait_for()
    text = item.inner_text()
    assert text.startswith("Length") and "mm" in text and "axial slice" in text, text
    with page.expect_download() as dl:
        page.get_by_role("button", name="Export measurements as JSON").click()
    (m,) = json.loads(Path(dl.value.path()).read_text())["measurements"]
    a, b = np.array(m["points"][0]), np.array(m["points"][1])
    assert m["length"] == pytest.approx(float(np.linalg.norm(a - b)), abs=0.05)
    assert m["length"] > 10


def test_volume_ellipse_region_statistics(page, base_url, jobs, shots):
    """A region on an axial slice (NiiVue draws it as the ellipse inscribed in the dragged box):
    mean, sd, min, max, voxel count and area of the result's voxels whose centres lie inside that
    ellipse, against nibabel's array; the box's corners are exported in RAS mm."""
    vol = jobs["vol"]
    processed = _nifti(_download(page, base_url, _output(vol, "primary")["url"]))
    # the voxel order NiiVue works in (RAS): flip the axes whose affine direction is negative
    ras = nib.as_closest_canonical(processed)
    data = np.asanyarray(ras.dataobj).astype(float)
    spacing = ras.header.get_zooms()[:3]
    _open(page, jobs["user"], vol["job_id"], "volume")
    page.get_by_role("button", name="Clear").click()
    page.get_by_role("button", name="Axial").click()
    page.keyboard.press("e")
    assert page.get_by_label("Left drag").locator("option:checked").inner_text() == "Ellipse region"
    box = page.locator(".nv-main").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    _drag(page, (cx - 70, cy - 50), (cx + 40, cy + 60))
    item = page.get_by_test_id("measurements").locator("li").first
    item.wait_for()
    text = item.inner_text()
    assert text.startswith("Ellipse") and "axial slice" in text and "mm²" in text, text
    with page.expect_download() as dl:
        page.get_by_role("button", name="Export measurements as JSON").click()
    (m,) = json.loads(Path(dl.value.path()).read_text())["measurements"]
    assert m["tool"] == "ellipse"
    to_vox = np.linalg.inv(ras.affine)
    lo, hi = (np.rint((to_vox @ [*p, 1])[:3]).astype(int) for p in m["points"])
    assert lo[2] == hi[2] and hi[0] - lo[0] >= 5 and hi[1] - lo[1] >= 5, (lo, hi)
    x, y = np.mgrid[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1]
    (x0, y0), (rx, ry) = (lo[:2] + hi[:2]) / 2, (hi[:2] - lo[:2]) / 2
    inside = data[x, y, lo[2]][((x - x0) / rx) ** 2 + ((y - y0) / ry) ** 2 <= 1]
    assert inside.size < (hi[0] - lo[0] + 1) * (hi[1] - lo[1] + 1)  # not the whole box
    assert m["pixels"] == inside.size
    assert m["mean"] == pytest.approx(inside.mean(), rel=1e-4)
    assert m["sd"] == pytest.approx(inside.std(ddof=1), rel=1e-3)
    assert m["min"] == pytest.approx(inside.min(), rel=1e-4)
    assert m["max"] == pytest.approx(inside.max(), rel=1e-4)
    assert m["area"] == pytest.approx(inside.size * spacing[0] * spacing[1], rel=1e-6)
    assert m["lengthUnit"] == "mm"
    page.locator(".nv-stage").screenshot(path=str(shots / "volume-ellipse.png"))


def test_volume_wheel_slices_and_full_screen(page, jobs, shots):
    _open(page, jobs["user"], jobs["vol"]["job_id"], "volume")
    viewer = page.locator(".viewer3d")
    page.get_by_role("button", name="Axial").click()
    box = page.locator(".nv-main").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    start = int(viewer.get_attribute("data-slice").split()[1])
    page.mouse.wheel(0, -100)
    page.wait_for_function(
        f"() => document.querySelector('.viewer3d').dataset.slice !== 'axial {start}'", timeout=5000
    )
    moved = int(viewer.get_attribute("data-slice").split()[1])
    assert abs(moved - start) == 1, (start, moved)
    page.mouse.wheel(0, 100)
    page.wait_for_function(
        f"() => document.querySelector('.viewer3d').dataset.slice === 'axial {start}'", timeout=5000
    )
    assert page.evaluate("() => scrollY === 0 && document.querySelector('.detail-panel').scrollTop === 0")
    # Full screen: the viewer and its side column alone, the image area larger; f again leaves it.
    before = page.locator(".nv-stage").bounding_box()
    page.get_by_role("button", name="Full screen").click()
    page.wait_for_function(
        "() => document.fullscreenElement?.classList.contains('workspace')"
        " || !!document.querySelector('.workspace.pseudo-fullscreen')"
    )
    page.wait_for_timeout(300)
    full = page.locator(".nv-stage").bounding_box()
    assert full["width"] * full["height"] > 1.1 * before["width"] * before["height"], (before, full)
    page.screenshot(path=str(shots / "volume-full-screen.png"))
    page.locator(".nv-main").focus()
    page.keyboard.press("f")
    page.wait_for_function(
        "() => !document.fullscreenElement && !document.querySelector('.workspace.pseudo-fullscreen')"
    )


def _series_zip() -> bytes:
    """A ZIP of two CT series of one patient and study: 3 slices "AXIAL SOFT", 2 slices "BONE"."""
    import pydicom

    from tests.processor.imaging.helpers import ct_slice

    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for uid, desc, number, count in [
            ("1.2.826.0.1.7.1", "AXIAL SOFT", 2, 3),
            ("1.2.826.0.1.7.2", "BONE", 3, 2),
        ]:
            for k in range(count):
                raw = ct_slice(
                    (rng.integers(900, 1200, (16, 16))).astype(np.uint16),
                    series_uid=uid,
                    position=(0.0, 0.0, 2.0 * k),
                    instance=k + 1,
                    window=(40, 400),
                )
                ds = pydicom.dcmread(io.BytesIO(raw))
                ds.PatientID = "PAT-0042"
                ds.SeriesDescription = desc
                ds.SeriesNumber = number
                ds.StudyDescription = "CT HEAD"
                ds.StudyDate = "20240131"
                out = io.BytesIO()
                ds.save_as(out, enforce_file_format=True)
                zf.writestr(f"{desc}/{k}.dcm", out.getvalue())
    return buf.getvalue()


def test_studies_browser_groups_two_series_and_gallery_opens_the_first(
    page, base_url, sample_png, tmp_path, shots
):
    user = new_user("studies")
    job = _post_job(page, base_url, user, [("two_series.zip", _series_zip())], "blur", {"sigma": 0.5})
    metas = [t["result"]["metadata"] for t in job["task_results"]]
    assert {m["patient_id"] for m in metas} == {"PAT-0042"}
    from PIL import Image

    second = tmp_path / "second.png"
    Image.open(sample_png).rotate(90).save(second)
    multi = _post_many(
        page,
        base_url,
        user,
        [("first.png", sample_png.read_bytes()), ("second.png", second.read_bytes())],
        "grayscale",
    )
    _open(page, user, multi["job_id"], "2d")
    # the multi-file job: a gallery of its tasks with thumbnails, the first one open
    gallery = page.locator(".task-gallery li")
    assert gallery.count() == 2 and gallery.first.locator(".thumb img").count() == 1
    page.get_by_role("heading", name="Result: first.png").wait_for()
    page.keyboard.press("n")
    page.get_by_role("heading", name="Result: second.png").wait_for()
    page.keyboard.press("p")
    page.get_by_role("heading", name="Result: first.png").wait_for()

    show_side_panel(page)
    page.get_by_role("tab", name="Studies").click()
    studies = page.get_by_test_id("studies")
    patient = studies.locator('[data-patient="PAT-0042"]')
    patient.wait_for()
    assert patient.locator(".study").count() == 1
    assert "CT HEAD" in patient.locator(".study-head").inner_text()
    series = patient.locator(".series")
    assert series.count() == 2
    titles = series.locator(".series-title").all_inner_texts()
    # numbered series first; the series number of a series the ZIP held besides the processed
    # one may be unknown (then it comes last)
    assert titles[0] == "#2 CT AXIAL SOFT" and titles[1] in ("#3 CT BONE", "CT BONE"), titles
    assert series.first.locator(".thumb img").count() == 1  # the processed series' thumbnail
    # files without DICOM data are listed apart
    assert studies.locator('[data-patient="No DICOM patient data"] .series').count() == 2
    page.screenshot(path=str(shots / "studies-browser.png"))
    # a series opens its job
    series.first.get_by_role("button", name="blur").click()
    page.locator('.viewer2d[data-state="ready"], .viewer3d[data-state="ready"]').first.wait_for(
        timeout=JOB_TIMEOUT * 1000
    )
    assert job["job_id"] in page.url


def test_cheat_sheet_and_params_that_apply(page, base_url, jobs, shots):
    _open(page, jobs["user"], jobs["vol"]["job_id"], "volume")
    # a NIfTI volume: output_format (the format of 2D results) does not apply
    params = page.locator(".job-params").inner_text()
    assert "sigma=2" in params and "output_format" not in params, params
    page.keyboard.press("?")
    sheet = page.get_by_role("dialog", name="Keyboard shortcuts")
    sheet.wait_for()
    text = sheet.inner_text()
    for words in ["slice", "axial", "presets", "reset", "overlay", "next / previous task", "length", "angle"]:
        assert words in text.lower(), words
    page.screenshot(path=str(shots / "cheat-sheet.png"))
    page.keyboard.press("Escape")
    sheet.wait_for(state="hidden")
    # j shows and hides the side panel
    page.keyboard.press("j")
    page.locator('#main[data-side="open"]').wait_for()
    page.keyboard.press("j")
    page.locator('#main[data-side="closed"]').wait_for()
    _open(page, jobs["user"], jobs["ct"]["job_id"], "2d")
    assert "output_format" in page.locator(".job-params").inner_text()
