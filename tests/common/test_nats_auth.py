"""NATS locked down: a real nats-server with the configuration that `make run` writes
(services/common/nats_auth.py). No credentials, no entry; each service's user can do its own work and
nothing else: every attack of the tenant-boundary issue is refused by the server."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from services.common import messaging, nats_auth
from services.common.config import Settings
from services.common.gen.radiology.v1 import common_pb2, tasks_pb2
from services.processor.worker import subscribe as processor_subscribe
from tests.conftest import _binary, free_port, wait_port


class AuthNats:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.config, self.passwords = nats_auth.write_server_config(
            folder / "auth", host="127.0.0.1", port=self.port, store_dir=folder / "store"
        )
        self.proc = subprocess.Popen([_binary("nats-server"), "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthNats]:
    s = AuthNats(tmp_path_factory.mktemp("nats-auth"))
    yield s
    s.stop()


class Client:
    """A connection as one service, recording the permission violations the server reports."""

    def __init__(self, nc: NATS, violations: list[str]) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=1.0)
        self.violations = violations

    async def refused(self, subject_part: str, timeout: float = 2.0) -> bool:
        """True once the server has reported a violation naming `subject_part`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if any(subject_part.lower() in v.lower() for v in self.violations):
                return True
            await asyncio.sleep(0.02)
        return False


async def connect_as(server: AuthNats, service: str, name: str | None = None) -> Client:
    violations: list[str] = []

    async def on_error(exc: Exception) -> None:
        violations.append(str(exc))

    nc = await nats.connect(
        server.url, name=name or service, user=service, password=server.passwords[service],
        inbox_prefix=messaging.inbox_prefix(name or service), error_cb=on_error,
        max_reconnect_attempts=0,
    )
    return Client(nc, violations)


@pytest.fixture
async def jobs(server: AuthNats) -> AsyncIterator[Client]:
    c = await connect_as(server, nats_auth.JOBS)
    await messaging.ensure_streams(c.js)
    yield c
    await c.nc.close()


@pytest.fixture
async def processor(server: AuthNats, jobs: Client) -> AsyncIterator[Client]:
    c = await connect_as(server, nats_auth.PROCESSOR)
    yield c
    await c.nc.close()


def task_message(job_id: str, user: str = "alice") -> tasks_pb2.TaskMessage:
    return tasks_pb2.TaskMessage(
        task_id=str(uuid.uuid4()), job_id=job_id, user_id=user, task_type="blur",
        input_key=f"{user}/{job_id}/scan.png", input_file="scan.png", output_stem="scan",
    )


async def publish_task(jobs: Client, task: tasks_pb2.TaskMessage) -> None:
    await jobs.js.publish(messaging.task_subject(task.task_type, task.job_id, task.task_id),
                          task.SerializeToString(), headers={"Nats-Msg-Id": task.task_id})


async def queued(jobs: Client) -> int:
    return (await jobs.js.stream_info(messaging.TASKS_STREAM)).state.messages


# --- files -----------------------------------------------------------------------------------------

def test_credentials_are_private_random_and_kept(tmp_path: Path) -> None:
    folder = tmp_path / "auth"
    first = nats_auth.ensure_credentials(folder)
    assert set(first) == {"jobs", "processor"} and first["jobs"] != first["processor"]
    assert all(len(p) >= 40 for p in first.values())
    assert stat.S_IMODE((folder / "credentials.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert nats_auth.ensure_credentials(folder) == first  # a restart keeps them
    config, _ = nats_auth.write_server_config(folder, host="127.0.0.1", port=4322, store_dir=tmp_path)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "no_auth_user" not in config.read_text()
    assert first["processor"] in config.read_text()
    assert nats_auth.ensure_credentials(tmp_path / "other") != first


def test_passwords_from_the_environment_stay_variables() -> None:
    block = nats_auth.authorization({"jobs": "$NATS_JOBS_PASSWORD", "processor": "pa\"ss"})
    assert "password: $NATS_JOBS_PASSWORD\n" in block
    assert 'password: "pa\\"ss"' in block


# --- who gets in -----------------------------------------------------------------------------------

async def test_no_credentials_no_connection(server: AuthNats) -> None:
    for options in ({}, {"user": "jobs", "password": "wrong"}, {"user": "admin", "password": "admin"},
                    {"user": "processor", "password": server.passwords["jobs"]}):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0,
                               connect_timeout=2, **options)


async def test_services_connect_with_their_settings(server: AuthNats) -> None:
    settings = Settings(nats_url=server.url, nats_user="processor",
                        nats_password=server.passwords["processor"])
    nc = await messaging.connect(settings.nats_url, "processor", user=settings.nats_user,
                                 password=settings.nats_password, creds_file=settings.nats_creds_file)
    assert nc.is_connected
    await nc.close()


# --- the legitimate flows --------------------------------------------------------------------------

async def test_the_platform_flows_work(server: AuthNats, jobs: Client, processor: Client) -> None:
    job_id = str(uuid.uuid4())
    # jobs: defines the processors' durable (at start, and its reconciler), updates it
    await messaging.ensure_task_consumer(jobs.js, ack_wait=5, max_deliver=3)
    await messaging.ensure_task_consumer(jobs.js, ack_wait=30, max_deliver=-1)
    assert await messaging.consumer_exists(jobs.js, messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
    # processor: waits for the streams and its durable, binds it as the worker does, hears cancel
    # notices
    await asyncio.wait_for(messaging.wait_for_streams(processor.js), 5)
    sub = await asyncio.wait_for(processor_subscribe(processor.js), 5)
    assert (await processor.js.consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
            ).config.ack_wait == 30  # the worker reads the consumer's ack_wait for its keep-alives
    cancels: list[bytes] = []
    await processor.nc.subscribe(messaging.JOB_CANCELLED_SUBJECT, cb=collect(cancels))
    # jobs: its durable on the events stream, job-changed fan-out
    consumer = messaging.consumer_config(messaging.JOBS_DURABLE, messaging.EVENTS_SUBJECT,
                                         ack_wait=30, max_deliver=-1)
    await jobs.js.add_consumer(messaging.EVENTS_STREAM, consumer)
    changed: list[str] = []
    await jobs.nc.subscribe(f"{messaging.JOB_CHANGED_SUBJECT}.*", cb=collect(changed, "subject"))

    task = task_message(job_id)
    await publish_task(jobs, task)
    [msg] = await sub.fetch(1, timeout=5)
    assert tasks_pb2.TaskMessage.FromString(msg.data) == task
    await msg.in_progress()
    event = tasks_pb2.TaskEvent(task_id=task.task_id, job_id=job_id, status=common_pb2.STATUS_RUNNING,
                                progress=10, message="fetched")
    await processor.js.publish(messaging.event_subject(task.task_id), event.SerializeToString(),
                               headers={"Nats-Msg-Id": f"{task.task_id}:10:RUNNING"})
    await msg.ack()
    assert (await sub.consumer_info()).num_pending == 0  # the queue-depth metric's read

    # jobs pulls the event from its durable as the event consumer does, and acks it
    events = await jobs.js.pull_subscribe_bind(durable=messaging.JOBS_DURABLE, stream=messaging.EVENTS_STREAM)
    [got] = await events.fetch(1, timeout=5)
    assert tasks_pb2.TaskEvent.FromString(got.data) == event
    await got.ack()
    await jobs.nc.publish(f"{messaging.JOB_CHANGED_SUBJECT}.{job_id}", b"origin")

    # cancel: the queued tasks of the job are purged and processors hear of it
    queued_task = task_message(job_id)
    await publish_task(jobs, queued_task)
    before = await queued(jobs)
    await messaging.purge_job_tasks(jobs.js, job_id)
    assert await queued(jobs) == before - 1
    await jobs.nc.publish(messaging.JOB_CANCELLED_SUBJECT, job_id.encode())
    await jobs.nc.flush()
    notice = f"{messaging.JOB_CHANGED_SUBJECT}.{job_id}"
    await _until(lambda: cancels == [job_id.encode()] and changed == [notice])
    assert jobs.violations == [] and processor.violations == []


def collect(seen: list, attribute: str = "data"):  # type: ignore[no-untyped-def,type-arg]
    """A subscription callback that records one attribute of every message."""

    async def cb(msg) -> None:  # type: ignore[no-untyped-def]
        seen.append(getattr(msg, attribute))

    return cb


async def _until(check, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


# --- the attacks, with a processor's credentials ---------------------------------------------------

async def test_processor_cannot_listen_to_everything(
    server: AuthNats, jobs: Client, processor: Client
) -> None:
    seen: list[str] = []
    for subject in ("radiology.>", f"{messaging.TASKS_SUBJECT}.>", ">", "_INBOX_jobs.>", "_INBOX.>",
                    f"{messaging.EVENTS_SUBJECT}.>", f"{messaging.JOB_CHANGED_SUBJECT}.>"):
        await processor.nc.subscribe(subject, cb=collect(seen, "subject"))
        assert await processor.refused(f'Subscription to "{subject}"'), processor.violations
    await publish_task(jobs, task_message(str(uuid.uuid4())))
    await jobs.nc.publish(f"{messaging.JOB_CHANGED_SUBJECT}.x", b"")
    await jobs.nc.flush()
    await asyncio.sleep(0.3)
    assert seen == []


async def test_processor_cannot_read_tasks_through_a_consumer_of_its_own(
    server: AuthNats, jobs: Client, processor: Client
) -> None:
    await publish_task(jobs, task_message(str(uuid.uuid4()), user="alice"))
    consumers = (await jobs.js.stream_info(messaging.TASKS_STREAM)).state.consumer_count
    attempts = [
        lambda: processor.js.add_consumer(messaging.TASKS_STREAM, durable_name="evil",
                                          filter_subject=f"{messaging.TASKS_SUBJECT}.>"),
        lambda: processor.js.add_consumer(messaging.TASKS_STREAM, name="evil2"),
        lambda: processor.js.pull_subscribe(f"{messaging.TASKS_SUBJECT}.>", stream=messaging.TASKS_STREAM),
        lambda: processor.js.get_msg(messaging.TASKS_STREAM, seq=1),
        lambda: processor.js.get_last_msg(messaging.TASKS_STREAM, f"{messaging.TASKS_SUBJECT}.>"),
        lambda: processor.js.consumers_info(messaging.TASKS_STREAM),
    ]
    for attempt in attempts:
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
            await attempt()
    for subject in ("CONSUMER.DURABLE.CREATE.RADIOLOGY_TASKS.evil", "CONSUMER.CREATE.RADIOLOGY_TASKS.evil2",
                    "STREAM.MSG.GET.RADIOLOGY_TASKS"):
        assert await processor.refused(subject), processor.violations
    assert (await jobs.js.stream_info(messaging.TASKS_STREAM)).state.consumer_count == consumers


async def test_processor_cannot_create_change_or_delete_its_durable(
    server: AuthNats, jobs: Client, processor: Client
) -> None:
    """A durable whose filter matches nothing (or that gives up after one delivery) starves every
    processor, as a purge would: only the jobs service may define it."""
    await messaging.ensure_task_consumer(jobs.js, ack_wait=30, max_deliver=-1)
    before = await jobs.js.consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
    starve = dict(filter_subject=f"{messaging.TASKS_SUBJECT}.nothing.>", max_deliver=1, ack_wait=1)
    durable = messaging.PROCESSOR_DURABLE
    attacks = [
        # update through each form of the API: named with a filter, named, and the legacy durable form
        (lambda: processor.js.add_consumer(messaging.TASKS_STREAM, name=durable, durable_name=durable,
                                           **starve),
         f"CONSUMER.CREATE.{messaging.TASKS_STREAM}.{durable}.{starve['filter_subject']}"),
        (lambda: processor.js.add_consumer(messaging.TASKS_STREAM, name=durable, durable_name=durable,
                                           filter_subject=">", max_deliver=1),
         f'CONSUMER.CREATE.{messaging.TASKS_STREAM}.{durable}"'),
        (lambda: processor.js.add_consumer(messaging.TASKS_STREAM, durable_name=durable, **starve),
         f"CONSUMER.DURABLE.CREATE.{messaging.TASKS_STREAM}.{durable}"),
        (lambda: processor.js.delete_consumer(messaging.TASKS_STREAM, durable),
         f"CONSUMER.DELETE.{messaging.TASKS_STREAM}.{durable}"),
    ]
    for attack, subject in attacks:
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
            await attack()
        assert await processor.refused(subject), (subject, processor.violations)
    after = await jobs.js.consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
    assert after.config == before.config and after.created == before.created

    # ... and, its durable intact, an honest processor still gets the queued task.
    await jobs.js.purge_stream(messaging.TASKS_STREAM)
    task = task_message(str(uuid.uuid4()))
    await publish_task(jobs, task)
    sub = await processor_subscribe(processor.js)
    [msg] = await sub.fetch(1, timeout=5)
    assert tasks_pb2.TaskMessage.FromString(msg.data) == task
    await msg.ack()


async def test_processor_cannot_publish_tasks_or_job_notices(
    server: AuthNats, jobs: Client, processor: Client
) -> None:
    job_id = str(uuid.uuid4())
    cancels: list[bytes] = []
    listener = await connect_as(server, nats_auth.PROCESSOR, name="processor")
    await listener.nc.subscribe(messaging.JOB_CANCELLED_SUBJECT, cb=collect(cancels))
    await listener.nc.flush()
    before = await queued(jobs)

    # a TaskMessage naming alice's input, to get a copy of it into the attacker's own job
    stolen = task_message(str(uuid.uuid4()), user="mallory")
    stolen.input_key = f"alice/{job_id}/scan.png"
    subject = messaging.task_subject("blur", stolen.job_id, stolen.task_id)
    with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
        await processor.js.publish(subject, stolen.SerializeToString(), timeout=1)
    await processor.nc.publish(subject, stolen.SerializeToString())
    assert await processor.refused(f'Publish to "{subject}"')

    # a cancel notice that would leave alice's job PENDING for ever; a job-changed notice
    await processor.nc.publish(messaging.JOB_CANCELLED_SUBJECT, job_id.encode())
    assert await processor.refused(f'Publish to "{messaging.JOB_CANCELLED_SUBJECT}"')
    await processor.nc.publish(f"{messaging.JOB_CHANGED_SUBJECT}.{job_id}", b"x")
    assert await processor.refused(f'Publish to "{messaging.JOB_CHANGED_SUBJECT}.{job_id}"')

    await processor.nc.flush()
    await asyncio.sleep(0.3)
    assert cancels == []
    assert await queued(jobs) == before
    await listener.nc.close()


async def test_nobody_but_the_jobs_service_can_purge_and_nobody_deletes(
    server: AuthNats, jobs: Client, processor: Client
) -> None:
    await messaging.ensure_task_consumer(jobs.js, ack_wait=5, max_deliver=3)
    await processor_subscribe(processor.js)
    await publish_task(jobs, task_message(str(uuid.uuid4())))
    before = await queued(jobs)
    assert before >= 1
    processor_attacks = [
        (lambda: processor.js.purge_stream(messaging.TASKS_STREAM), "STREAM.PURGE.RADIOLOGY_TASKS"),
        (lambda: processor.js.purge_stream(messaging.EVENTS_STREAM), "STREAM.PURGE.RADIOLOGY_EVENTS"),
        (lambda: processor.js.delete_stream(messaging.TASKS_STREAM), "STREAM.DELETE.RADIOLOGY_TASKS"),
        (lambda: processor.js.update_stream(name=messaging.TASKS_STREAM, subjects=["nothing.>"]),
         "STREAM.UPDATE.RADIOLOGY_TASKS"),
        (lambda: processor.js.add_stream(name="RADIOLOGY_EVIL", subjects=["radiology.job-cancelled"]),
         "STREAM.CREATE.RADIOLOGY_EVIL"),
        (lambda: processor.js.delete_consumer(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE),
         "CONSUMER.DELETE.RADIOLOGY_TASKS.processor"),
        (lambda: processor.js.delete_msg(messaging.TASKS_STREAM, 1), "STREAM.MSG.DELETE.RADIOLOGY_TASKS"),
    ]
    jobs_attacks = [
        (lambda: jobs.js.delete_stream(messaging.TASKS_STREAM), "STREAM.DELETE.RADIOLOGY_TASKS"),
        (lambda: jobs.js.delete_consumer(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE),
         "CONSUMER.DELETE.RADIOLOGY_TASKS.processor"),
        (lambda: jobs.js.delete_consumer(messaging.EVENTS_STREAM, messaging.JOBS_DURABLE),
         "CONSUMER.DELETE.RADIOLOGY_EVENTS.jobs"),
    ]
    for client, attacks in ((processor, processor_attacks), (jobs, jobs_attacks)):
        for attack, subject in attacks:
            with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
                await attack()
            assert await client.refused(subject), (subject, client.violations)
    assert await queued(jobs) == before
    info = await jobs.js.stream_info(messaging.TASKS_STREAM)
    assert info.config.subjects == [f"{messaging.TASKS_SUBJECT}.>"]
    # the jobs service itself may purge (a cancelled job's queued tasks)
    await jobs.js.purge_stream(messaging.TASKS_STREAM)
    assert await queued(jobs) == 0


async def test_processor_publishes_only_events_and_jobs_never_events(
    server: AuthNats, jobs: Client, processor: Client
) -> None:
    before = (await jobs.js.stream_info(messaging.EVENTS_STREAM)).state.messages
    await processor.js.publish(messaging.event_subject(str(uuid.uuid4())), b"x")
    await jobs.nc.publish(messaging.event_subject(str(uuid.uuid4())), b"forged")
    assert await jobs.refused(f'Publish to "{messaging.EVENTS_SUBJECT}.')
    await jobs.nc.flush()
    await asyncio.sleep(0.2)
    assert (await jobs.js.stream_info(messaging.EVENTS_STREAM)).state.messages == before + 1


def test_permission_table_is_json_safe() -> None:
    # the deploy configurations are compared with this table: keep it plain data
    json.dumps({k: [v.publish, v.subscribe] for k, v in nats_auth.PERMISSIONS.items()})
    for perms in nats_auth.PERMISSIONS.values():
        assert not any("DELETE" in s for s in perms.publish)
        assert ">" not in perms.publish and ">" not in perms.subscribe


def test_deploy_config_is_rendered_from_the_table() -> None:
    """compose and Kubernetes grant exactly what make run grants (regenerate with
    `python -m services.common.nats_auth`)."""
    root = Path(__file__).resolve().parents[2]
    assert (root / nats_auth.DEPLOY_FILE).read_text() == nats_auth.deploy_config()
