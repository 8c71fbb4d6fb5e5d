"""Junk in, clear error out, nothing left stored."""

from __future__ import annotations

import pytest

from tests.conftest import PLATFORM_TEST_ENV
from tests.e2e.conftest import PYDICOM_FILES, client, png_bytes, stored_keys, submit, wait_job

MAX_FILE = int(PLATFORM_TEST_ENV["RADIOLOGY_MAX_FILE_BYTES"])
MAX_FILES = int(PLATFORM_TEST_ENV["RADIOLOGY_MAX_FILES_PER_JOB"])


def _refused(platform, files, status: int, code: str, task_type: str = "blur", params=None,  # type: ignore[no-untyped-def]
             user: str = "mallory") -> dict:
    before = stored_keys(platform, user)
    with client(platform, user) as c:
        r = submit(c, files, task_type, params)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["detail"]
    assert "Traceback" not in r.text
    assert stored_keys(platform, user) == before, "a refused request left objects behind"
    return body


def test_empty_file(platform) -> None:
    body = _refused(platform, [("empty.png", b"")], 415, "unsupported_file")
    assert "empty.png" in body["detail"]


def test_text_named_png(platform) -> None:
    body = _refused(platform, [("notes.png", b"this is not an image\n" * 50)], 415, "unsupported_file")
    assert "notes.png" in body["detail"]


def test_one_junk_file_refuses_the_whole_request(platform) -> None:
    files = [("good.png", png_bytes()), ("bad.dcm", b"\x00" * 4000)]
    body = _refused(platform, files, 415, "unsupported_file")
    assert "bad.dcm" in body["detail"]


def test_unknown_task_type(platform) -> None:
    _refused(platform, [("a.png", png_bytes())], 422, "unknown_task_type", task_type="sharpen-everything")


@pytest.mark.parametrize("params", [{"sigma": -1}, {"sigma": "lots"}, {"nonsense": 1}])
def test_bad_params(platform, params) -> None:  # type: ignore[no-untyped-def]
    _refused(platform, [("a.png", png_bytes())], 422, "invalid_params", params=params)


def test_params_not_json(platform) -> None:
    before = stored_keys(platform, "mallory")
    with client(platform, "mallory") as c:
        r = c.post("/jobs", files=[("files", ("a.png", png_bytes()))], data={"params": "{sigma: 2"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_params"
    assert stored_keys(platform, "mallory") == before


def test_too_many_files(platform) -> None:
    files = [(f"f{i}.png", png_bytes((8, 8), seed=i)) for i in range(MAX_FILES + 1)]
    _refused(platform, files, 413, "too_many_files")


def test_file_too_large(platform) -> None:
    big = png_bytes() + b"\x00" * (MAX_FILE + 1)
    _refused(platform, [("a.png", png_bytes()), ("huge.png", big)], 413, "file_too_large")


def test_no_files(platform) -> None:
    with client(platform, "mallory") as c:
        r = c.post("/jobs", data={"task_type": "blur"}, files={"other": ("x", b"y")})
    assert r.status_code == 400 and r.json()["code"] == "no_files"


@pytest.mark.parametrize("user", ["../../etc", "..", ".", "a" * 65, "alice/x", "älice", "a b", ""])
def test_hostile_user_id(platform, user: str) -> None:
    with client(platform, None) as c:
        r = c.post("/jobs", files=[("files", ("a.png", png_bytes()))], headers={"X-User-ID": user.encode()})
        if user == "":
            assert r.status_code in (400, 401)
        else:
            assert r.status_code == 400, user
            assert r.json()["code"] == "invalid_user_id"
        assert c.get("/jobs", headers={"X-User-ID": user.encode()}).status_code in (400, 401)
    assert not (platform.data_dir / "etc").exists()


def test_missing_identity(platform) -> None:
    with client(platform, None) as c:
        r = c.get("/jobs")
    assert r.status_code == 401 and r.json()["code"] == "missing_identity"


def test_hostile_file_name_is_reduced_to_a_safe_base_name(platform) -> None:
    with client(platform, "mallory") as c:
        r = submit(c, [("../../etc/pass\x00wd.png", png_bytes())])
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"])
    (task,) = job["task_results"]
    name = task["input_file"]
    assert "/" not in name and "\x00" not in name and ".." not in name and name
    assert task["status"] == "SUCCESS"
    assert all(".." not in k for k in stored_keys(platform, "mallory"))
    assert not (platform.data_dir / "objects" / "etc").exists()


def test_truncated_png_fails_the_task_with_a_clear_error(platform) -> None:
    data = png_bytes((256, 256))
    with client(platform, "mallory") as c:
        job = wait_job(c, submit(c, [("cut.png", data[: len(data) // 2])]).json()["job_id"])
    (task,) = job["task_results"]
    assert job["status"] == "FAILED" and task["status"] == "FAILED"
    assert "png" in task["error"].lower() and "Traceback" not in task["error"]


def test_truncated_dicom_fails_the_task_with_a_clear_error(platform) -> None:
    data = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    with client(platform, "mallory") as c:
        job = wait_job(c, submit(c, [("cut.dcm", data[:-1000])]).json()["job_id"])
    (task,) = job["task_results"]
    assert task["status"] == "FAILED"
    assert "truncated" in task["error"].lower(), task["error"]


def test_failed_task_keeps_the_other_results(platform) -> None:
    data = png_bytes((256, 256))
    with client(platform, "mallory") as c:
        job = wait_job(c, submit(c, [("ok.png", data), ("cut.png", data[:300])]).json()["job_id"])
    by_name = {t["input_file"]: t for t in job["task_results"]}
    assert job["status"] == "FAILED"
    assert by_name["ok.png"]["status"] == "SUCCESS" and by_name["ok.png"]["result"]["outputs"]
    assert by_name["cut.png"]["status"] == "FAILED" and by_name["cut.png"]["error"]
