"""The operations catalogue through the real platform: GET /operations, a few operations checked
against pydicom and the standard's window formula, DICOM results read back by pydicom, and a ZIP of
two series processed as two tasks."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut

from services.processor.imaging.io_dicom_write import UidMap
from tests.conftest import start_platform
from tests.e2e.conftest import NIBABEL_FILES, PYDICOM_FILES, client, download, submit, wait_job

CONTRACT_OPERATIONS = [
    "blur",
    "resize",
    "grayscale",
    "window",
    "normalize",
    "denoise",
    "edges",
    "equalize",
    "mip",
    "threshold",
    "reorient",
    "convert",
    "anonymize",
]
CT = PYDICOM_FILES / "CT_small.dcm"


def _done(c, job_id: str) -> dict:  # type: ignore[no-untyped-def]
    job = wait_job(c, job_id, timeout=120)
    assert job["status"] == "SUCCESS", [t["error"] for t in job["task_results"]]
    return job


def _slices(series_uid: str, number: int, description: str, count: int, offset: int) -> list[bytes]:
    base = pydicom.dcmread(CT)
    out = []
    for k in range(count):
        ds = base.copy()
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, number, description
        ds.SOPInstanceUID = f"{series_uid}.{k + 1}"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + 2.5 * k]
        ds.PixelData = (ds.pixel_array + offset).astype(ds.pixel_array.dtype).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def test_get_operations_lists_the_thirteen_of_the_contract(platform) -> None:
    with client(platform) as c:
        ops = c.get("/operations").json()["operations"]
    assert [o["name"] for o in ops] == CONTRACT_OPERATIONS
    window = next(o for o in ops if o["name"] == "window")
    assert {(p["center"], p["width"]) for p in window["params_schema"]["examples"]} >= {
        (40, 80),
        (-600, 1500),
    }


def test_window_preset_is_the_standards_linear_function(platform) -> None:
    with client(platform) as c:
        job = _done(
            c, submit(c, [("ct.dcm", CT.read_bytes())], "window", {"preset": "abdomen"}).json()["job_id"]
        )
        result = job["task_results"][0]["result"]
        shown = np.asarray(Image.open(io.BytesIO(download(c, result["output_url"]))))
    ds = pydicom.dcmread(CT)
    x = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    c_, w = 50.0, 400.0  # abdomen; PS3.3 C.11.2.1.2.1
    y = ((x - (c_ - 0.5)) / (w - 1) + 0.5) * 255
    y = np.where(x <= c_ - 0.5 - (w - 1) / 2, 0, np.where(x > c_ - 0.5 + (w - 1) / 2, 255, y))
    np.testing.assert_array_equal(shown, np.rint(y).astype(np.uint8))
    assert result["metadata"]["window_center"] == 50


def test_dicom_results_read_back_with_pydicom(platform) -> None:
    source = pydicom.dcmread(CT)
    with client(platform) as c:
        job_id = submit(
            c, [("ct.dcm", CT.read_bytes())], "blur", {"sigma": 1.5, "output_format": "dicom"}
        ).json()
        result = _done(c, job_id["job_id"])["task_results"][0]["result"]
        primary = result["outputs"][0]
        assert primary["media_type"] == "application/dicom" and result["output_file"].endswith(
            "_processed.dcm"
        )
        derived = pydicom.dcmread(io.BytesIO(download(c, primary["url"])))
        volume = submit(
            c,
            [("anatomical.nii", (NIBABEL_FILES / "anatomical.nii").read_bytes())],
            "convert",
            {"format": "dicom"},
        ).json()
        series = _done(c, volume["job_id"])["task_results"][0]["result"]["outputs"][0]
        assert series["media_type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(download(c, series["url"]))) as zf:
            slices = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in zf.namelist()]
    assert derived.StudyInstanceUID == source.StudyInstanceUID and "DERIVED" in derived.ImageType
    assert derived.SeriesInstanceUID != source.SeriesInstanceUID
    assert derived.DerivationDescription == 'blur {"sigma":1.5}'
    assert derived.pixel_array.shape == source.pixel_array.shape
    assert len(slices) == 25 and len({s.SeriesInstanceUID for s in slices}) == 1
    assert all(s.pixel_array.shape == (41, 33) for s in slices)


def test_anonymize_keeps_a_jobs_uids_consistent(platform) -> None:
    one, two = _slices("1.2.826.0.1.3680043.2.1125.90", 3, "T1", 2, 0)
    with client(platform) as c:
        job = _done(c, submit(c, [("one.dcm", one), ("two.dcm", two)], "anonymize").json()["job_id"])
        back = [
            pydicom.dcmread(io.BytesIO(download(c, t["result"]["outputs"][0]["url"])))
            for t in job["task_results"]
        ]
    original = pydicom.dcmread(io.BytesIO(one))
    assert back[0].SeriesInstanceUID == back[1].SeriesInstanceUID != original.SeriesInstanceUID
    assert back[0].StudyInstanceUID == back[1].StudyInstanceUID != original.StudyInstanceUID
    assert back[0].PatientIdentityRemoved == "YES" and str(back[0].PatientName) != str(original.PatientName)
    assert back[0].PixelData == original.PixelData
    # keyed by the secret the launcher generated for the processor (var/anonymize.key), not by
    # the job id alone as the unkeyed uuid5 derivation was
    secret = (platform.data_dir / "anonymize.key").read_text().strip()
    assert back[0].StudyInstanceUID == UidMap(secret, job["job_id"])(original.StudyInstanceUID)
    unkeyed = uuid.uuid5(uuid.NAMESPACE_OID, f"radiology-anonymize:{job['job_id']}" + chr(0)
                         + original.StudyInstanceUID)
    assert back[0].StudyInstanceUID != f"2.25.{unkeyed.int}"


def test_anonymize_without_the_secret_fails_naming_it(tmp_path) -> None:
    """A processor started without RADIOLOGY_ANONYMIZE_SECRET (a custom deployment) says so once at
    start, and its anonymize tasks fail with that message: UIDs are never derived without the key."""
    platform = start_platform(tmp_path / "data", env={"RADIOLOGY_ANONYMIZE_SECRET": ""})
    try:
        one, two = _slices("1.2.826.0.1.3680043.2.1125.93", 3, "T1", 2, 0)
        with client(platform) as c:
            r = submit(c, [("one.dcm", one), ("two.dcm", two)], "anonymize")
            assert r.status_code == 202, r.text
            job = wait_job(c, r.json()["job_id"], timeout=120)
    finally:
        platform.stop()
    assert job["status"] == "FAILED" and len(job["task_results"]) == 2
    for task in job["task_results"]:
        assert task["status"] == "FAILED"
        assert task["error"].startswith("RADIOLOGY_ANONYMIZE_SECRET is not set"), task["error"]
        assert "Traceback" not in task["error"] and not task.get("result")
    lines = (platform.data_dir / "logs" / "processor.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    said = [e for e in entries if "RADIOLOGY_ANONYMIZE_SECRET is not set" in e["message"]]
    at_start = [e for e in said if e["logger"] == "services.processor.server"]
    assert len(at_start) == 1 and at_start[0]["level"] == "error", said  # once, at start
    assert at_start[0]["message"].startswith("anonymize tasks will fail")
    assert said.index(at_start[0]) == 0  # before any task ran


def test_a_zip_of_two_series_is_two_tasks(platform) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, data in enumerate(_slices("1.2.826.0.1.3680043.2.1125.91", 2, "AX small", 3, 0)):
            zf.writestr(f"a/{k}.dcm", data)
        for k, data in enumerate(_slices("1.2.826.0.1.3680043.2.1125.92", 7, "AX big", 5, 100)):
            zf.writestr(f"b/{k}.dcm", data)
    with client(platform) as c:
        r = submit(c, [("exam.zip", buf.getvalue())], "convert", {"format": "nifti"})
        assert r.status_code == 202, r.text
        assert len(r.json()["task_ids"]) == 2
        job = _done(c, r.json()["job_id"])
    tasks = job["task_results"]
    assert [t["input_file"] for t in tasks] == ["exam.zip", "exam.zip"]
    names = [t["result"]["output_file"] for t in tasks]
    assert names == ["exam_s2_AX_small_processed.nii.gz", "exam_s7_AX_big_processed.nii.gz"]
    meta = [t["result"]["metadata"] for t in tasks]
    assert [m["series_instance_uid"] for m in meta] == [
        "1.2.826.0.1.3680043.2.1125.91",
        "1.2.826.0.1.3680043.2.1125.92",
    ]
    assert [m["shape"][2] for m in meta] == [3, 5]
    assert all("warnings" not in m for m in meta)


def test_a_2d_dicom_for_mip_is_refused_at_submission(platform) -> None:
    """The processor's Inspect reads the kind from the headers: a single CT slice is not a volume,
    so mip refuses it with 422 before a task exists; a series of slices is accepted."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, data in enumerate(_slices("1.2.826.0.1.3680043.2.1125.93", 3, "AX", 4, 0)):
            zf.writestr(f"{k}.dcm", data)
    with client(platform) as c:
        r = submit(c, [("slice.dcm", CT.read_bytes())], "mip", {})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["code"] == "input_not_accepted" and "slice.dcm" in body["detail"]
        assert "2D image" in body["detail"] and "3D volume" in body["detail"]
        r = submit(c, [("series.zip", buf.getvalue())], "mip", {})
        assert r.status_code == 202, r.text
        _done(c, r.json()["job_id"])
