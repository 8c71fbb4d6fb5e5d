"""The NATS configuration of compose and Kubernetes (deploy/k8s/components/nats/nats.conf and
nats-auth.conf) on a real nats-server: each service's own NATS calls succeed with its own user, what
it has no business doing is refused, and nobody gets in without credentials."""

from __future__ import annotations

import subprocess
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
from tests.deploy.conftest import K8S

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
