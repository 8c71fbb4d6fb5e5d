"""A backing service that is down gives a quick 503 (never a hang or a 500), and nothing is lost."""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_server import LIVENESS_SERVICE
from tests.conftest import start_platform
from tests.e2e.conftest import client, png_bytes, stored_keys, submit, wait_job


def _timed(call):  # type: ignore[no-untyped-def]
    start = time.monotonic()
    response = call()
    return response, time.monotonic() - start


def _until_accepted(c, timeout: float = 10):  # type: ignore[no-untyped-def]
    """A restarted peer is used again within seconds (the gateway's channels retry every <= 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        r = submit(c, [("e.png", png_bytes())])
        if r.status_code == 202 or time.monotonic() > deadline:
            return r
        assert r.status_code == 503 and r.headers.get("retry-after"), r.text
        time.sleep(0.2)


def test_each_backing_service_down_then_back(tmp_path) -> None:
    platform = start_platform(tmp_path / "data", env={"RADIOLOGY_RPC_TIMEOUT_SECONDS": "3"})
    try:
        with client(platform) as c:
            job_id = submit(c, [("a.png", png_bytes())]).json()["job_id"]
            wait_job(c, job_id)

            platform.stop_service("storage")
            r, took = _timed(lambda: submit(c, [("b.png", png_bytes())]))
            assert r.status_code == 503 and r.json()["code"] == "service_unavailable", r.text
            assert "storage" in r.json()["detail"] and took < 10
            r = c.get("/readyz")
            assert r.status_code == 503 and "storage" in r.json()["detail"]
            assert c.get(f"/jobs/{job_id}").status_code == 200  # what doesn't need storage still works
            platform.start_service("storage")

            platform.stop_service("jobs")
            r, took = _timed(lambda: c.get(f"/jobs/{job_id}"))
            assert r.status_code == 503 and "jobs" in r.json()["detail"] and took < 10
            r, took = _timed(lambda: submit(c, [("c.png", png_bytes())]))
            assert r.status_code == 503 and took < 10
            platform.start_service("jobs")
            # Back within seconds; this job's params are now freshly validated (see below).
            r = _until_accepted(c)
            assert r.status_code == 202, r.text
            warm_id = r.json()["job_id"]

            platform.stop_service("processor")
            # Params never checked before cannot be validated now: 503.
            r, took = _timed(lambda: submit(c, [("d.png", png_bytes())], "blur", {"sigma": 1.2345}))
            assert r.status_code == 503 and "processor" in r.json()["detail"] and took < 10
            # Params the gateway validated moments ago are known good: the job is queued in
            # JetStream and runs once a processor is back.
            r = submit(c, [("q.png", png_bytes())])
            assert r.status_code == 202, r.text
            queued_id = r.json()["job_id"]
            assert c.get(f"/jobs/{queued_id}").json()["status"] == "PENDING"
            # A job cancelled while it waits is purged from the queue: the processor that starts
            # later (and never heard the cancel notice) does not run it.
            r = submit(c, [("x.png", png_bytes())])
            assert r.status_code == 202, r.text
            cancelled_id = r.json()["job_id"]
            assert c.post(f"/jobs/{cancelled_id}/cancel").json()["status"] == "CANCELLED"
            platform.start_service("processor")
            assert wait_job(c, queued_id)["status"] == "SUCCESS"

            # Everything is back; the job from before is intact and new work runs.
            assert c.get(f"/jobs/{job_id}").json()["status"] == "SUCCESS"
            r = _until_accepted(c)
            assert r.status_code == 202, r.text
            again = wait_job(c, r.json()["job_id"])
            assert again["status"] == "SUCCESS"
            # By now a processor would have run the cancelled job's task had it still been queued.
            assert [k for k in stored_keys(platform, "alice") if k.startswith(cancelled_id)] == [
                f"{cancelled_id}/x.png"
            ]
            assert c.get(f"/jobs/{cancelled_id}").json()["status"] == "CANCELLED"
            deadline = time.monotonic() + 10  # probes poll; the gateway reconnects within ~2 s
            while (ready := c.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ready.status_code == 200, ready.text
            # Refused uploads left nothing behind: only the two jobs' files exist.
            listed = {j["job_id"] for j in c.get("/jobs").json()["jobs"]}
            assert listed == {job_id, warm_id, queued_id, cancelled_id, again["job_id"]}
    finally:
        platform.stop()


def _readyz_until(c, done, timeout: float = 15):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not done(r := c.get("/readyz")) and time.monotonic() < deadline:
        time.sleep(0.2)
    return r


def _health(port: int, service: str) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_readyz_says_not_ready_while_nats_is_down(tmp_path) -> None:
    """The gRPC services stay up when NATS goes away, but they cannot do their work: their health
    goes NOT_SERVING (so /readyz and Kubernetes probes see it) until NATS is back."""
    platform = start_platform(tmp_path / "data")
    try:
        with client(platform) as c:
            assert _readyz_until(c, lambda r: r.status_code == 200).status_code == 200
            platform.stop_service("nats")
            r = _readyz_until(c, lambda r: r.status_code == 503 and r.json()["detail"].count(",") == 1)
            assert r.status_code == 503, r.text
            assert "jobs" in r.json()["detail"] and "processor" in r.json()["detail"], r.text
            assert "storage" not in r.json()["detail"]  # storage does not need NATS
            # Not ready, but alive: the entry Kubernetes' liveness probes ask for stays SERVING, so
            # an outage of NATS never gets the pods restarted.
            for port in (platform.ports.jobs, platform.ports.processor):
                assert _health(port, "") == "NOT_SERVING"
                assert _health(port, LIVENESS_SERVICE) == "SERVING"
            platform.start_nats()
            r = _readyz_until(c, lambda r: r.status_code == 200, timeout=30)
            assert r.status_code == 200, r.text
            # And work flows again.
            r = _until_accepted(c)
            assert r.status_code == 202, r.text
            assert wait_job(c, r.json()["job_id"])["status"] == "SUCCESS"
    finally:
        platform.stop()
