"""The NATS configuration of compose and Kubernetes (deploy/k8s/components/nats/nats.conf and
nats-auth.conf) on a real nats-server: each service's own NATS calls succeed with its own user, what
it has no business doing is refused, and nobody gets in without credentials, neither as a client
nor as a server on the Kubernetes cluster's route port."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.js.errors import APIError

from services.common import messaging
from services.jobs.events import EventConsumer
from services.processor.worker import subscribe
from tests.conftest import _binary, free_port, wait_port
from tests.deploy.conftest import K8S, render_overlay

NATS_DIR = K8S / "components" / "nats"
PASSWORDS = {"jobs": "jobs-test-password", "processor": "processor-test-password"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nats-server with the deployment's config; only the store folder and ports differ."""
    folder = tmp_path_factory.mktemp("nats-conf")
    conf = (NATS_DIR / "nats.conf").read_text()
    assert "store_dir: /data" in conf
    (folder / "nats.conf").write_text(conf.replace("store_dir: /data", f"store_dir: {folder / 'js'}"))
    (folder / "nats-auth.conf").write_text((NATS_DIR / "nats-auth.conf").read_text())
    port, monitor = free_port(), free_port()
    env = {"NATS_JOBS_PASSWORD": PASSWORDS["jobs"], "NATS_PROCESSOR_PASSWORD": PASSWORDS["processor"]}
    proc = subprocess.Popen(
        [
            _binary("nats-server"),
            "-c",
            str(folder / "nats.conf"),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            str(monitor),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(port)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def _connect(url: str, user: str, password: str | None = None):  # type: ignore[no-untyped-def]
    return await messaging.connect(  # named as the service: its NATS user's own inbox prefix
        url, user, user=user, password=PASSWORDS[user] if password is None else password
    )


async def _refused(url: str, **auth: str) -> None:
    with pytest.raises((nats.errors.Error, OSError)):
        nc = await nats.connect(
            url, allow_reconnect=False, connect_timeout=3, max_reconnect_attempts=0, **auth
        )
        await nc.close()


async def test_no_connection_without_a_known_user(server: str) -> None:
    await _refused(server)
    await _refused(server, user="jobs", password="wrong")
    await _refused(server, user="gateway", password=PASSWORDS["jobs"])


async def test_the_services_own_calls_work_and_others_are_refused(server: str) -> None:
    jobs = await _connect(server, "jobs")
    proc = await _connect(server, "processor")
    try:
        js_jobs, js_proc = jobs.jetstream(timeout=3), proc.jetstream(timeout=3)
        # jobs service: streams, its consumer, tasks, purge, core notices.
        await messaging.ensure_streams(js_jobs)
        await messaging.ensure_streams(js_jobs)  # the update path of a second replica
        await EventConsumer(jobs, None, None).ensure_consumer()  # type: ignore[arg-type]
        # ... and the processors' durable (create, then update as a restart with new settings does).
        await messaging.ensure_task_consumer(js_jobs, ack_wait=5, max_deliver=3)
        await messaging.ensure_task_consumer(js_jobs, ack_wait=30, max_deliver=-1)
        # processor: waits for the streams, then for its durable and binds it, exactly as
        # services/processor/server.py and the worker do it.
        await messaging.wait_for_streams(js_proc)
        sub = await subscribe(js_proc)
        cancelled = await proc.subscribe(messaging.JOB_CANCELLED_SUBJECT)
        changed = await jobs.subscribe(f"{messaging.JOB_CHANGED_SUBJECT}.*")
        await proc.flush()
        await jobs.flush()

        job_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
        await js_jobs.publish(
            messaging.task_subject("blur", job_id, task_id), b"task", headers={"Nats-Msg-Id": task_id}
        )
        (msg,) = await sub.fetch(1, timeout=5)
        assert msg.data == b"task"
        await msg.in_progress()
        assert (await sub.consumer_info()).num_pending == 0
        await js_proc.publish(
            messaging.event_subject(task_id), b"event", headers={"Nats-Msg-Id": f"{task_id}:100:SUCCESS"}
        )
        await msg.ack()

        # The jobs service pulls the event through its durable consumer, as EventConsumer does.
        events = await js_jobs.pull_subscribe_bind(
            durable=messaging.JOBS_DURABLE, stream=messaging.EVENTS_STREAM
        )
        (event,) = await events.fetch(1, timeout=5)
        assert event.data == b"event"
        await event.ack()

        await jobs.publish(f"{messaging.JOB_CHANGED_SUBJECT}.{job_id}", b"origin")
        await jobs.publish(messaging.JOB_CANCELLED_SUBJECT, job_id.encode())
        assert (await cancelled.next_msg(timeout=5)).data == job_id.encode()
        assert (await changed.next_msg(timeout=5)).data == b"origin"
        await js_jobs.publish(
            messaging.task_subject("blur", job_id, task_id), b"queued",
            headers={"Nats-Msg-Id": str(uuid.uuid4())},
        )
        await messaging.purge_job_tasks(js_jobs, job_id)
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=1)

        # What each may not do is refused by the server (no reply, or a permissions error).
        refused = (nats.errors.TimeoutError, nats.errors.NoRespondersError, APIError)
        with pytest.raises(refused):  # a processor cannot queue tasks ...
            await js_proc.publish(messaging.task_subject("blur", job_id, task_id), b"forged", timeout=1)
        with pytest.raises(refused):  # ... nor purge or delete streams ...
            await messaging.purge_job_tasks(js_proc, job_id)
        with pytest.raises(refused):
            await js_proc.delete_stream(messaging.TASKS_STREAM)
        with pytest.raises(refused):  # ... nor read the jobs service's events ...
            await js_proc.consumer_info(messaging.EVENTS_STREAM, messaging.JOBS_DURABLE)
        durable, nothing = messaging.PROCESSOR_DURABLE, f"{messaging.TASKS_SUBJECT}.nothing.>"
        for change in (  # ... nor create, change or delete its own durable (only the jobs service)
            lambda: js_proc.add_consumer(messaging.TASKS_STREAM, durable_name=durable,
                                         filter_subject=nothing, max_deliver=1),
            lambda: js_proc.add_consumer(messaging.TASKS_STREAM, name=durable, durable_name=durable,
                                         filter_subject=nothing, max_deliver=1),
            lambda: js_proc.delete_consumer(messaging.TASKS_STREAM, durable),
        ):
            with pytest.raises(refused):
                await change()
        kept = await js_jobs.consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
        assert kept.config.filter_subject == f"{messaging.TASKS_SUBJECT}.>"
        assert kept.config.max_deliver == -1
        with pytest.raises(refused):  # the jobs service cannot pose as a processor
            await js_jobs.publish(messaging.event_subject(task_id), b"forged", timeout=1)
        with pytest.raises(refused):
            await js_jobs.delete_stream(messaging.EVENTS_STREAM)
        # Both streams are still there, unharmed.
        info = await js_jobs.add_stream(
            name=messaging.TASKS_STREAM,
            subjects=[f"{messaging.TASKS_SUBJECT}.>"],
            retention="workqueue",
            duplicate_window=messaging.DUPLICATE_WINDOW_SECONDS,
        )
        assert info.config.name == messaging.TASKS_STREAM
    finally:
        await jobs.close()
        await proc.close()


def test_the_config_names_the_codes_streams_and_consumers() -> None:
    auth = (NATS_DIR / "nats-auth.conf").read_text()
    for name in (messaging.TASKS_STREAM, messaging.EVENTS_STREAM):
        assert f"$JS.API.STREAM.CREATE.{name}" in auth
    assert f"$JS.API.CONSUMER.MSG.NEXT.{messaging.TASKS_STREAM}.{messaging.PROCESSOR_DURABLE}" in auth
    assert f"$JS.API.CONSUMER.MSG.NEXT.{messaging.EVENTS_STREAM}.{messaging.JOBS_DURABLE}" in auth
    # The processors' durable is created by the jobs user only.
    create = f"$JS.API.CONSUMER.DURABLE.CREATE.{messaging.TASKS_STREAM}.{messaging.PROCESSOR_DURABLE}"
    assert auth.count(create) == 1 and auth.index(create) < auth.index('user: "processor"')
    for subject in (messaging.TASKS_SUBJECT, messaging.EVENTS_SUBJECT, messaging.JOB_CHANGED_SUBJECT):
        assert f'"{subject}.>"' in auth
    assert f'"{messaging.JOB_CANCELLED_SUBJECT}"' in auth
    assert "password: $NATS_JOBS_PASSWORD" in auth and "password: $NATS_PROCESSOR_PASSWORD" in auth
    assert Path(NATS_DIR / "nats.conf").read_text().count("include ./nats-auth.conf") == 1


def _routes(monitor: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/routez", timeout=5) as reply:
        return json.load(reply).get("routes") or []


def _prod_nats() -> tuple[dict, dict[str, str]]:
    """The prod overlay's NATS StatefulSet and the platform's ConfigMap."""
    objects = render_overlay("prod")
    (nats_set,) = [o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "nats"]
    (config,) = [o for o in objects if o["kind"] == "ConfigMap" and "RADIOLOGY_NATS_URL" in o.get("data", {})]
    return nats_set, config["data"]


class _Cluster:
    """nats-server processes run with the StatefulSet's own arguments as Kubernetes expands them
    ($(POD_NAME), $(NATS_CLUSTER_PASSWORD)), the pods' DNS names replaced by local ports."""

    def __init__(self, tmp_path: Path, args: list[str], password: str) -> None:
        self.tmp, self.args, self.password = tmp_path, args, password
        routes = next(a for a in args if a.startswith("--routes=")).split("=", 1)[1].split(",")
        self.route_ports = [free_port() for _ in routes]
        self.client_ports: dict[int, int] = {}
        self.monitors: dict[int, int] = {}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        (tmp_path / "nats-auth.conf").write_text((NATS_DIR / "nats-auth.conf").read_text())
        self.conf = (NATS_DIR / "nats.conf").read_text()
        assert "store_dir: /data" in self.conf

    def local(self, arg: str, index: int, listen: int | None = None) -> str:
        arg = arg.replace("$(NATS_CLUSTER_PASSWORD)", self.password).replace("$(POD_NAME)", f"nats-{index}")
        arg = arg.replace("0.0.0.0:6222", f"127.0.0.1:{listen or self.route_ports[index]}")
        pods = r"nats-(\d)\.nats-headless:6222"
        arg = re.sub(pods, lambda m: f"127.0.0.1:{self.route_ports[int(m[1])]}", arg)
        return arg.replace("/etc/nats/nats.conf", str(self.tmp / f"nats-{index}.conf")).replace(
            "/var/run/nats/nats.pid", str(self.tmp / f"nats-{index}.pid")
        )

    def start(self, index: int, server_args: list[str] | None = None) -> None:
        server_args = server_args or [self.local(a, index) for a in self.args]
        (self.tmp / f"nats-{index}.conf").write_text(
            self.conf.replace("store_dir: /data", f"store_dir: {self.tmp / f'js-{index}'}")
        )
        self.client_ports[index], self.monitors[index] = free_port(), free_port()
        env = {
            "NATS_JOBS_PASSWORD": PASSWORDS["jobs"],
            "NATS_PROCESSOR_PASSWORD": PASSWORDS["processor"],
            "NATS_CLUSTER_PASSWORD": self.password,
        }
        with open(self.tmp / f"nats-{index}.log", "wb") as log:
            self.procs[index] = subprocess.Popen(
                [_binary("nats-server"), *server_args, "-a", "127.0.0.1", "-p", str(self.client_ports[index])]
                + ["-m", str(self.monitors[index])],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_port(self.monitors[index])

    def log(self, index: int) -> str:
        return (self.tmp / f"nats-{index}.log").read_text()

    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{port}" for port in self.client_ports.values()]

    def stop(self, index: int) -> None:
        proc = self.procs.pop(index)
        proc.terminate()
        proc.wait(30)

    def close(self) -> None:
        for index in list(self.procs):
            self.stop(index)


def test_cluster_routes_need_the_route_password(tmp_path: Path) -> None:
    """The prod StatefulSet's own arguments, on this machine: two servers that know the password of
    radiology-nats-cluster form the cluster; a server without it is refused on the route port, and
    the monitoring port (open to KEDA and Prometheus) never shows the password."""
    nats_set, _ = _prod_nats()
    container = nats_set["spec"]["template"]["spec"]["containers"][0]
    secret = next(e for e in container["env"] if e["name"] == "NATS_CLUSTER_PASSWORD")
    assert secret["valueFrom"]["secretKeyRef"] == {"name": "radiology-nats-cluster", "key": "password"}
    args = container["args"]
    cluster_arg = next(a for a in args if a.startswith("--cluster="))
    route_urls = next(a for a in args if a.startswith("--routes=")).split("=", 1)[1].split(",")
    assert cluster_arg == "--cluster=nats://route:$(NATS_CLUSTER_PASSWORD)@0.0.0.0:6222"
    assert len(route_urls) == nats_set["spec"]["replicas"] == 3
    assert all(u.startswith("nats://route:$(NATS_CLUSTER_PASSWORD)@") for u in route_urls), route_urls

    password = "route-test-password"
    cluster = _Cluster(tmp_path, args, password)  # nats-0 and nats-1 run here; nats-2 stays away
    try:
        for index in (0, 1):
            cluster.start(index)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(_routes(m) for m in cluster.monitors.values()):
            time.sleep(0.2)
        assert {r["remote_name"] for r in _routes(cluster.monitors[0])} == {"nats-1"}
        assert {r["remote_name"] for r in _routes(cluster.monitors[1])} == {"nats-0"}

        # An intruder that reaches the route port: the same arguments without the credentials (and
        # its own listening port, so that the servers' routes to nats-2 do not find it).
        intruder = [re.sub(r"route:\$\(NATS_CLUSTER_PASSWORD\)@", "", a) for a in args]
        assert intruder != args
        own_port = free_port()
        intruder = [cluster.local(a, 2, own_port) for a in intruder]
        intruder = [a.replace("--name=nats-2", "--name=intruder") for a in intruder]
        cluster.start(2, intruder)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "Authentication Failure" not in cluster.log(0):
            time.sleep(0.2)
        assert "Authentication Failure" in cluster.log(0)
        assert _routes(cluster.monitors[2]) == []
        assert {r["remote_name"] for r in _routes(cluster.monitors[0])} == {"nats-1"}

        for index in (0, 1):
            for page in ("varz", "routez", "jsz", "connz"):
                url = f"http://127.0.0.1:{cluster.monitors[index]}/{page}"
                with urllib.request.urlopen(url, timeout=5) as reply:
                    assert password not in reply.read().decode(), page
    finally:
        cluster.close()


async def _until(call, timeout: float = 30):  # type: ignore[no-untyped-def]
    """`call()` once JetStream answers it (a cluster electing its leaders answers errors meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except (nats.errors.Error, APIError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_streams_keep_copies_on_three_servers_and_survive_their_leader(tmp_path: Path) -> None:
    """Kubernetes runs 3 NATS servers; the jobs service gives each stream (and so each consumer) a
    copy on every one (RADIOLOGY_NATS_STREAM_REPLICAS of the ConfigMap), also for streams an
    earlier release created with one copy. Stopping the server that leads the tasks stream loses
    no queued task: the processor still gets it from the others."""
    nats_set, config = _prod_nats()
    replicas = int(config["RADIOLOGY_NATS_STREAM_REPLICAS"])
    assert replicas == nats_set["spec"]["replicas"] == 3
    cluster = _Cluster(tmp_path, nats_set["spec"]["template"]["spec"]["containers"][0]["args"], "route-pw")
    for index in range(3):
        cluster.start(index)
    jobs = proc = None
    try:
        jobs = await messaging.connect(cluster.urls(), "jobs", user="jobs", password=PASSWORDS["jobs"])  # type: ignore[arg-type]
        proc = await messaging.connect(
            cluster.urls(), "processor", user="processor", password=PASSWORDS["processor"]  # type: ignore[arg-type]
        )
        js_jobs, js_proc = jobs.jetstream(timeout=5), proc.jetstream(timeout=5)
        await _until(lambda: messaging.ensure_streams(js_jobs, 1))  # as before this setting
        assert (await js_jobs.stream_info(messaging.TASKS_STREAM)).config.num_replicas == 1
        await _until(lambda: messaging.ensure_streams(js_jobs, replicas))
        for stream in (messaging.TASKS_STREAM, messaging.EVENTS_STREAM):
            info = await _until(lambda s=stream: js_jobs.stream_info(s))
            assert info.config.num_replicas == replicas, stream
        # The processors' durable is the jobs service's to create (it inherits the stream's copies).
        await _until(lambda: messaging.ensure_task_consumer(js_jobs, ack_wait=5, max_deliver=-1))
        sub = await _until(lambda: subscribe(js_proc))

        async def three_copies():  # type: ignore[no-untyped-def]
            """Both streams and the consumer with a leader and two followers that caught up (a
            stream just moved from one copy to three has followers that are not current yet: its
            leader stopping then would leave it without a leader until it is back)."""
            infos = [await js_jobs.stream_info(s) for s in (messaging.TASKS_STREAM, messaging.EVENTS_STREAM)]
            consumer = await js_proc.consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
            for cluster_info in [i.cluster for i in infos] + [consumer.cluster]:
                followers = cluster_info.replicas or []
                if len(followers) != replicas - 1 or not all(f.current for f in followers):
                    raise nats.errors.Error("copies not placed or not caught up yet")
            return infos[0]

        info = await _until(three_copies)
        job_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
        await js_jobs.publish(
            messaging.task_subject("blur", job_id, task_id), b"task", headers={"Nats-Msg-Id": task_id}
        )
        leader = int(info.cluster.leader.rsplit("-", 1)[1])
        cluster.stop(leader)
        (msg,) = await _until(lambda: sub.fetch(1, timeout=3), timeout=60)
        assert msg.data == b"task"
        await msg.ack()
        after = await _until(lambda: js_jobs.stream_info(messaging.TASKS_STREAM))
        assert after.cluster.leader != info.cluster.leader
    finally:
        for nc in (jobs, proc):
            if nc is not None:
                await nc.close()
        cluster.close()
