"""docker-compose.yml end to end, with podman-compose and local stand-in images (deploy/compose/ci.yml).

Builds the image from the Debian base and the wheelhouse, starts the whole stack, waits for every
healthcheck, runs the seed README's flows through the gateway (PNG + DICOM + NIfTI, SSE to SUCCESS,
downloads, alice/bob isolation), kills the processor that holds a task and watches the other finish
it, then `down` and `up` again and finds the job and its files; everything is removed at the end,
also when the test fails. Needs podman, podman-compose and (the first time) mmdebstrap; CI sets
RADIOLOGY_REQUIRE_CONTAINERS=1 so that their absence fails instead of skipping.
"""

from __future__ import annotations

import os
import time

import httpx
import pytest

from tests.conftest import free_port
from tests.deploy import containers
from tests.deploy.conftest import need_tool
from tests.e2e.conftest import NIBABEL_FILES, PYDICOM_FILES, png_bytes, submit, wait_job
from tests.e2e.test_durability import _slow_volume
from tests.e2e.test_events import _events

pytestmark = [pytest.mark.slow, pytest.mark.containers, pytest.mark.timeout(1800)]


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def stack():  # type: ignore[no-untyped-def]
    need_tool("podman", "RADIOLOGY_REQUIRE_CONTAINERS", "compose end-to-end test")
    need_tool("podman-compose", "RADIOLOGY_REQUIRE_CONTAINERS", "compose end-to-end test")
    if not containers.image_exists(containers.BASE_IMAGE) and not (containers.CACHE / "base.tar").exists():
        need_tool("mmdebstrap", "RADIOLOGY_REQUIRE_CONTAINERS", "compose end-to-end test")
    started = time.monotonic()
    timings = containers.build_images()
    ports = {
        name: str(free_port())
        for name in (
            "GATEWAY_PORT",
            "NATS_MONITOR_PORT",
            "MINIO_CONSOLE_PORT",
            "PROMETHEUS_PORT",
            "GRAFANA_PORT",
        )
    }
    project = containers.ComposeProject(
        f"radiology-ci-{os.getpid()}",
        {
            "RADIOLOGY_IMAGE": containers.APP_IMAGE,
            "CI_POSTGRES_IMAGE": containers.POSTGRES_IMAGE,
            "CI_S3_IMAGE": containers.S3_IMAGE,
            "CI_PROMETHEUS_IMAGE": containers.PROMETHEUS_IMAGE,
            **ports,
        },
    )
    project.remove_everything()
    try:
        t = time.monotonic()
        project.up()
        project.wait_healthy()
        timings["first up until healthy"] = time.monotonic() - t
        project.base_url = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"  # type: ignore[attr-defined]
        project.prometheus_url = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"  # type: ignore[attr-defined]
        project.timings = timings  # type: ignore[attr-defined]
        yield project
    finally:
        project.remove_everything()
        timings["total"] = time.monotonic() - started
        print("compose e2e timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    assert not project.containers(), "containers left behind"


def _client(stack, user: str | None) -> httpx.Client:  # type: ignore[no-untyped-def]
    return httpx.Client(base_url=stack.base_url, headers={"X-User-ID": user} if user else {}, timeout=60)


def test_compose_stack_end_to_end(stack) -> None:  # type: ignore[no-untyped-def]
    # --- the image: non-root, read-only root filesystem, no build tools ---------------------------
    gateway = stack.container_names("gateway")[0]
    assert stack.exec(gateway, "id", "-u").strip() == "10001"
    tools = stack.exec(gateway, "sh", "-c", "command -v gcc cc make pip pip3 npm apt-get || true")
    assert tools.strip() in ("", "/usr/bin/apt-get"), tools
    assert (
        containers.run(["podman", "exec", gateway, "touch", "/app/x"], timeout=60, check=False).returncode
        != 0
    )
    # --- the seed README flows, through the published gateway port -----------------------------
    with _client(stack, "alice") as alice, _client(stack, "bob") as bob:
        assert alice.get("/readyz").status_code == 200
        assert alice.get("/").status_code == 200  # the web UI from the image
        files = [
            ("test-image.png", png_bytes()),
            ("CT_small.dcm", (PYDICOM_FILES / "CT_small.dcm").read_bytes()),
            ("example4d.nii.gz", (NIBABEL_FILES / "example4d.nii.gz").read_bytes()),
        ]
        r = submit(alice, files, "blur", {"sigma": 1.5})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        events = _events(alice, job_id)
        assert events[-1]["status"] == "SUCCESS", events[-1]
        job = alice.get(f"/jobs/{job_id}").json()
        assert job["status"] == "SUCCESS" and len(job["task_results"]) == 3
        downloads = {}
        for task in job["task_results"]:
            for out in task["result"]["outputs"]:
                body = alice.get(out["url"]).content
                assert len(body) == out["size"], out
                downloads[out["filename"]] = body
        assert any(body.startswith(b"\x89PNG") for body in downloads.values())
        assert any(name.endswith(".nii.gz") for name in downloads)

        # alice's job, task and files are 404 for bob, like ones that never existed.
        task = job["task_results"][0]
        assert bob.get(f"/jobs/{job_id}").status_code == 404
        assert bob.get(f"/tasks/{task['task_id']}").status_code == 404
        assert bob.get(f"/files/alice/{job_id}/test-image.png").status_code == 404
        assert job_id not in {j["job_id"] for j in bob.get("/jobs").json()["jobs"]}

        # --- kill the processor that holds a task: the other one finishes it ---------------------
        processors = stack.container_names("processor")
        assert len(processors) == 2, processors
        r = submit(alice, [("big.nii.gz", _slow_volume())], "blur", {"sigma": 12.0})
        assert r.status_code == 202, r.text
        slow_id = r.json()["job_id"]
        slow_task = r.json()["task_ids"][0]
        holder = None
        deadline = time.monotonic() + 120
        while holder is None and time.monotonic() < deadline:
            for name in processors:
                metrics = stack.exec(
                    name,
                    "python",
                    "-c",
                    "import urllib.request;print(urllib.request.urlopen("
                    "'http://127.0.0.1:9100/metrics').read().decode())",
                )
                if _metric(metrics, "worker_active_tasks") >= 1:
                    holder = name
                    break
            time.sleep(0.3)
        assert holder, "no processor picked up the task"
        survivor = next(n for n in processors if n != holder)
        assert alice.get(f"/jobs/{slow_id}").json()["status"] in ("PENDING", "RUNNING")
        containers.run(["podman", "kill", "--signal", "KILL", holder], timeout=60)
        slow = wait_job(alice, slow_id, timeout=300)
        assert slow["status"] == "SUCCESS", slow
        assert slow_task in stack.logs(survivor), "the surviving processor did not settle the task"

    # --- Prometheus scrapes every service (the configuration of deploy/observability) ----------
    deadline = time.monotonic() + 90
    while True:
        up = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": "up == 1"}, timeout=10).json()
        services = {r["metric"].get("service") for r in up["data"]["result"]}
        if {"gateway", "jobs", "storage", "processor"} <= services or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert {"gateway", "jobs", "storage", "processor"} <= services, up
    rules = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()
    assert {r["name"] for g in rules["data"]["groups"] for r in g["rules"]} >= {
        "RadiologyTaskErrorRateHigh",
        "RadiologyQueueDepthHigh",
        "RadiologyNoWorker",
        "RadiologyApiLatencyHigh",
    }

    # --- down and up again: the jobs and their files are still there -------------------------
    t = time.monotonic()
    stack.down()
    assert not stack.containers()
    stack.up()
    stack.wait_healthy()
    stack.timings["down + up until healthy"] = time.monotonic() - t
    with _client(stack, "alice") as alice:
        again = alice.get(f"/jobs/{job_id}").json()
        assert again["status"] == "SUCCESS"
        for task in again["task_results"]:
            for out in task["result"]["outputs"]:
                assert alice.get(out["url"]).content == downloads[out["filename"]]
            assert alice.get(f"/files/alice/{job_id}/{task['input_file']}").status_code == 200
        assert alice.get(f"/jobs/{slow_id}").json()["status"] == "SUCCESS"
        # And the restarted stack still processes new work.
        r = submit(alice, [("after.png", png_bytes(seed=3))], "grayscale")
        assert r.status_code == 202, r.text
        assert wait_job(alice, r.json()["job_id"], timeout=120)["status"] == "SUCCESS"
