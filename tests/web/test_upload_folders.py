"""Uploading a picked folder: a folder of DICOM files (some without the .dcm extension) is packed
into one ZIP in the browser and becomes one volume job. Screenshots: test-output/web/."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from .conftest import new_user, show_side_panel, sign_in
from .test_ui import JOB_TIMEOUT, wait_job_status

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
    tasks = page.locator(".task-gallery li")
    assert tasks.count() == 1
    assert tasks.first.locator(".file-name").inner_text() == "ct_series.zip"
    page.locator('.viewer3d[data-state="ready"]').wait_for(timeout=JOB_TIMEOUT)
    # After a successful upload the picked files are gone: a second click cannot resubmit.
    show_side_panel(page)
    assert page.get_by_role("button", name="Upload and run").is_disabled()
    page.screenshot(path=str(shots / "dicom-folder-volume.png"))
