"""The seed README's manual tests, automated against the real platform."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.e2e.conftest import NIBABEL_FILES, PYDICOM_FILES, client, download, png_bytes, submit, wait_job


def test_single_upload_then_poll_to_success(platform) -> None:
    with client(platform, "test-user") as c:
        r = submit(c, [("test-image.png", png_bytes())])
        assert r.status_code == 202, r.text
        body = r.json()
        assert set(body) >= {"job_id", "user_id", "status", "task_ids", "created_at"}
        assert body["status"] == "PENDING" and body["user_id"] == "test-user"
        assert r.headers["location"] == f"/jobs/{body['job_id']}"
        assert len(body["task_ids"]) == 1

        job = wait_job(c, body["job_id"])
        assert job["status"] == "SUCCESS" and job["progress"] == 100
        assert job["task_type"] == "blur"
        (task,) = job["task_results"]
        assert task["task_id"] == body["task_ids"][0]
        assert task["status"] == "SUCCESS" and task["progress"] == 100 and task["error"] is None
        result = task["result"]
        assert result["input_file"] == "test-image.png"
        assert result["task_type"] == "blur"
        # Seed clients build the file URL from output_file's name.
        assert result["output_url"].split("?")[0].endswith("/" + result["output_file"].split("/")[-1])
        primary = result["outputs"][0]
        assert primary["role"] == "primary" and primary["media_type"] == "image/png"
        data = download(c, result["output_url"])
        assert len(data) == primary["size"]
        out = np.asarray(Image.open(io.BytesIO(data)))
        assert out.shape == (64, 96)


def test_task_endpoint_matches_job(platform) -> None:
    with client(platform) as c:
        job_id = submit(c, [("a.png", png_bytes())]).json()["job_id"]
        job = wait_job(c, job_id)
        task = job["task_results"][0]
        r = c.get(f"/tasks/{task['task_id']}")
        assert r.status_code == 200
        assert r.json()["status"] == "SUCCESS"
        assert r.json()["result"]["output_file"] == task["result"]["output_file"]


def test_multi_file_job(platform) -> None:
    with client(platform) as c:
        files = [(f"img{i}.png", png_bytes(seed=i)) for i in range(4)]
        r = submit(c, files, "grayscale")
        assert r.status_code == 202, r.text
        assert len(r.json()["task_ids"]) == 4
        job = wait_job(c, r.json()["job_id"])
        assert job["status"] == "SUCCESS"
        assert sorted(t["input_file"] for t in job["task_results"]) == [f"img{i}.png" for i in range(4)]
        outputs = {t["result"]["output_file"] for t in job["task_results"]}
        assert len(outputs) == 4


def test_alice_and_bob_are_isolated(platform) -> None:
    with client(platform, "alice") as alice, client(platform, "bob") as bob:
        job_id = submit(alice, [("private.png", png_bytes())]).json()["job_id"]
        job = wait_job(alice, job_id)
        task = job["task_results"][0]
        output = task["result"]["output_file"].split("/")[-1]

        never = "00000000-0000-4000-8000-000000000000"
        missing_job = bob.get(f"/jobs/{never}")
        for path in (f"/jobs/{job_id}", f"/tasks/{task['task_id']}", f"/jobs/{job_id}/events"):
            r = bob.get(path)
            assert r.status_code == 404, path
            assert r.json()["code"] == missing_job.json()["code"]
        assert bob.post(f"/jobs/{job_id}/cancel").status_code == 404
        assert bob.delete(f"/jobs/{job_id}").status_code == 404
        # The seed let anyone download anyone's files: bob gets nothing, not even the input.
        for name in (output, "private.png"):
            assert bob.get(f"/files/alice/{job_id}/{name}").status_code == 404
            assert bob.get(f"/files/bob/{job_id}/{name}").status_code == 404
        assert job_id not in {j["job_id"] for j in bob.get("/jobs").json()["jobs"]}
        # Alice still has everything.
        assert alice.get(f"/files/alice/{job_id}/{output}").status_code == 200
        assert alice.get(f"/files/alice/{job_id}/private.png").status_code == 200
        # A signed URL works without any header (for <img src> and NiiVue) ...
        with client(platform, None) as anon:
            assert anon.get(task["result"]["output_url"]).status_code == 200
            # ... but not for another file, nor once tampered.
            token = task["result"]["output_url"].split("token=")[1]
            assert anon.get(f"/files/alice/{job_id}/private.png?token={token}").status_code == 404
            assert anon.get(task["result"]["output_url"][:-2] + "xx").status_code == 404


def test_list_jobs_newest_first_and_paginated(platform) -> None:
    with client(platform, "lister") as c:
        ids = [submit(c, [("x.png", png_bytes(seed=i))]).json()["job_id"] for i in range(5)]
        page1 = c.get("/jobs", params={"limit": 3}).json()
        assert [j["job_id"] for j in page1["jobs"]] == ids[::-1][:3]
        page2 = c.get("/jobs", params={"limit": 3, "cursor": page1["next_cursor"]}).json()
        assert [j["job_id"] for j in page2["jobs"]] == ids[::-1][3:]
        assert not page2.get("next_cursor")
        for job_id in ids:
            wait_job(c, job_id)
        done = c.get("/jobs", params={"status": "SUCCESS"}).json()["jobs"]
        assert {j["job_id"] for j in done} == set(ids)


def test_operations_catalogue_and_health(platform) -> None:
    with client(platform) as c:
        ops = {op["name"]: op for op in c.get("/operations").json()["operations"]}
        assert {"blur", "resize", "grayscale"} <= set(ops)
        assert ops["blur"]["params_schema"]["properties"]["sigma"]["default"] > 0
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        metrics = c.get("/metrics").text
        assert "api_request_rate" in metrics


def test_every_url_the_api_returns_serves_its_file_even_for_long_names(platform) -> None:
    names = ["a" * 124 + ".png", "b" * 200 + ".nii.gz", "c" * 126 + ".dcm"]
    data = [png_bytes(), (NIBABEL_FILES / "example4d.nii.gz").read_bytes(),
            (PYDICOM_FILES / "CT_small.dcm").read_bytes()]
    with client(platform, "longnames") as c:
        r = submit(c, list(zip(names, data, strict=True)))
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"])
        assert job["status"] == "SUCCESS", [t["error"] for t in job["task_results"]]
        for task in job["task_results"]:
            assert len(task["input_file"]) <= 128
            assert c.get(f"/files/longnames/{job['job_id']}/{task['input_file']}").status_code == 200
            for out in task["result"]["outputs"]:
                assert c.get(out["url"]).status_code == 200, out["filename"]
