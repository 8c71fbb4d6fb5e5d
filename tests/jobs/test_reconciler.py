"""The reconciler against a real nats-server and SQLite (the jobs service in-process)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from services.common import messaging
from services.common.deadlines import deadline_error
from services.common.gen.radiology.v1 import common_pb2, jobs_pb2
from services.jobs import reconciler as reconciler_module
from services.jobs.models import jobs as jobs_table
from services.jobs.models import tasks as tasks_table
from services.jobs.models import utcnow
from services.jobs.publisher import republish_id

from .harness import Running, StorageServer, start_jobs
from .test_service import create_request, send_event, stream_tasks, wait_for

S = common_pb2
NOW = timedelta(0)  # a stall time that makes every published, unfinished task stalled


async def test_a_queued_task_is_left_alone(jobs: Running) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png", "b.png"))
    jobs.app.reconciler.stall = NOW
    done = await jobs.app.reconciler.run_once()
    assert done.still_queued == 2 and done.republished == [] and done.failed == []
    assert len(await stream_tasks(jobs, job.job_id)) == 2


async def test_tasks_lost_with_a_purged_stream_are_published_again(jobs: Running) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png", "b.png"))
    await send_event(jobs, job.tasks[0], S.STATUS_RUNNING, 10, message="fetched")

    async def running() -> bool:
        got = await jobs.stub.GetTask(_get_task(job.tasks[0]))
        return got.status == S.STATUS_RUNNING

    await wait_for(running)
    await jobs.js.purge_stream(messaging.TASKS_STREAM)

    reconciler = jobs.app.reconciler
    reconciler.stall = timedelta(seconds=60)
    assert (await reconciler.run_once()).republished == []  # not stalled yet: nothing to do

    reconciler.stall = NOW
    stalled, _ = await jobs.app.repo.stalled_tasks(utcnow(), 10)
    done = await reconciler.run_once()
    assert sorted(done.republished) == sorted(t.task_id for t in job.tasks)  # PENDING and RUNNING
    msgs = await stream_tasks(jobs, job.job_id)
    assert sorted(m.task_id for _, m in msgs) == sorted(t.task_id for t in job.tasks)
    for headers, msg in msgs:
        # a fresh Nats-Msg-Id: the duplicate window must not drop the republish
        assert headers["Nats-Msg-Id"].startswith(f"{msg.task_id}:r")
        assert msg.dispatched_at > 0

    # A second jobs replica finding the same lost publish sends the same Nats-Msg-Id, so
    # JetStream keeps one message per task.
    assert {h["Nats-Msg-Id"] for h, _ in msgs} == {republish_id(t) for _, t in stalled}

    # Published again just now: with a real stall time, the next pass leaves them be.
    reconciler.stall = timedelta(seconds=60)
    assert (await reconciler.run_once()).republished == []
    # ... and with any stall time, they are queued again.
    reconciler.stall = NOW
    assert (await reconciler.run_once()).still_queued == 2


@pytest.mark.parametrize("page", [1, 2, 4])
async def test_a_pass_looks_at_every_stalled_task_a_page_at_a_time(
    jobs: Running, monkeypatch: pytest.MonkeyPatch, page: int
) -> None:
    monkeypatch.setattr(reconciler_module, "PAGE", page)
    queued = await jobs.stub.CreateJob(create_request("alice", "a.png", "b.png", "c.png"))
    lost = await jobs.stub.CreateJob(create_request("alice", "d.png", "e.png", "f.png"))
    await messaging.purge_job_tasks(jobs.js, lost.job_id)
    jobs.app.reconciler.stall = NOW
    done = await jobs.app.reconciler.run_once()
    assert sorted(done.republished) == sorted(t.task_id for t in lost.tasks)
    assert done.still_queued == 3
    assert len(await stream_tasks(jobs, queued.job_id)) == 3 == len(await stream_tasks(jobs, lost.job_id))


async def test_a_finished_task_is_never_republished(jobs: Running) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    await send_event(jobs, job.tasks[0], S.STATUS_FAILED, 100, error="bad input")

    async def failed() -> bool:
        return (await jobs.stub.GetJob(_get_job(job))).status == S.STATUS_FAILED

    await wait_for(failed)
    await jobs.js.purge_stream(messaging.TASKS_STREAM)
    jobs.app.reconciler.stall = NOW
    done = await jobs.app.reconciler.run_once()
    assert done.republished == [] and done.failed == []


async def test_a_stalled_task_past_its_deadline_fails_with_a_clear_message(jobs: Running) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    reconciler = jobs.app.reconciler
    reconciler.stall = NOW
    reconciler.deadline_seconds = 0.0
    done = await reconciler.run_once()
    assert done.failed == [job.tasks[0].task_id]
    got = await jobs.stub.GetJob(_get_job(job))
    assert got.status == S.STATUS_FAILED
    assert got.tasks[0].error == "not finished within the task deadline of 0 s"
    assert deadline_error(6 * 3600) == "not finished within the task deadline of 6 h"
    assert deadline_error(300) == "not finished within the task deadline of 5 min"

    # A late SUCCESS (a processor that got the task after all) changes nothing: first terminal wins.
    await send_event(jobs, job.tasks[0], S.STATUS_SUCCESS, 100)

    async def consumed() -> bool:  # the jobs service acks an event once it has handled it
        return not await messaging.events_pending(jobs.js, job.tasks[0].task_id)

    await wait_for(consumed)
    assert (await jobs.stub.GetJob(_get_job(job))).status == S.STATUS_FAILED


async def test_the_deadline_counts_from_the_first_publish_not_the_job_s_creation(jobs: Running) -> None:
    """A task that fair share held back for hours is not late: its clock starts when it is first
    published, and a republish keeps that time."""
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    (first,) = await stream_tasks(jobs, job.job_id)
    assert abs(first[1].dispatched_at - utcnow().timestamp()) < 60
    # The job waited two hours in the database; its task was published 30 minutes ago.
    created, dispatched = utcnow() - timedelta(hours=2), utcnow() - timedelta(minutes=30)

    def backdate(conn):  # type: ignore[no-untyped-def]
        conn.execute(update(jobs_table).values(created_at=created))
        conn.execute(update(tasks_table).values(dispatched_at=dispatched))

    await jobs.app.repo._run(backdate, write=True)
    await jobs.js.purge_stream(messaging.TASKS_STREAM)
    reconciler = jobs.app.reconciler
    reconciler.stall, reconciler.deadline_seconds = NOW, 3600.0
    done = await reconciler.run_once()
    assert done.failed == [] and done.republished == [job.tasks[0].task_id]
    (again,) = await stream_tasks(jobs, job.job_id)
    assert again[1].dispatched_at == pytest.approx(dispatched.timestamp(), abs=1.0)

    # Past the deadline counted from that first publish, it fails.
    await jobs.js.purge_stream(messaging.TASKS_STREAM)
    reconciler.deadline_seconds = 20 * 60.0
    assert (await reconciler.run_once()).failed == [job.tasks[0].task_id]


async def test_deleted_streams_and_consumer_are_reported_and_recreated(jobs: Running) -> None:
    assert await jobs.app.ready() is None
    await jobs.js.delete_stream(messaging.TASKS_STREAM)
    problem = await jobs.app.ready()
    assert problem is not None and messaging.TASKS_STREAM in problem
    done = await jobs.app.reconciler.run_once()
    # the processors' durable went with its stream: the jobs service alone re-creates it
    assert done.recreated == [messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE]
    assert await jobs.app.ready() is None

    await jobs.js.delete_consumer(messaging.EVENTS_STREAM, messaging.JOBS_DURABLE)
    problem = await jobs.app.ready()
    assert problem is not None and messaging.JOBS_DURABLE in problem
    assert (await jobs.app.reconciler.run_once()).recreated == [messaging.JOBS_DURABLE]
    assert await jobs.app.ready() is None

    # The event consumer works again on the re-created durable.
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    await send_event(jobs, job.tasks[0], S.STATUS_RUNNING, 40, message="decoded")

    async def applied() -> bool:
        return (await jobs.stub.GetTask(_get_task(job.tasks[0]))).progress == 40

    await wait_for(applied, 15)


async def test_the_processors_durable_is_created_at_start_and_recreated(
    private_nats: Any, fake_storage: StorageServer, tmp_path: Path
) -> None:
    """The jobs service is the only one that defines the processors' durable (processors may only
    read and pull from it): created at start with the configured ack_wait and max_deliver, and
    re-created by the reconciler with the same configuration when it is missing."""
    running = await start_jobs(private_nats.url, fake_storage.addr, tmp_path / "jobs.db",
                               ack_wait_seconds=7.0, max_deliver=5)
    js = running.js
    try:
        info = await js.consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
        expected = messaging.task_consumer_config(ack_wait=7.0, max_deliver=5)
        assert (info.config.filter_subject, info.config.ack_wait, info.config.max_deliver,
                info.config.ack_policy) == (expected.filter_subject, 7.0, 5, expected.ack_policy)
        assert expected.filter_subject == f"{messaging.TASKS_SUBJECT}.>"

        await js.delete_consumer(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
        # Tasks wait in the stream meanwhile; the jobs service itself stays ready (processors
        # report the missing durable as their own readiness problem).
        assert await running.app.ready() is None
        assert (await running.app.reconciler.run_once()).recreated == [messaging.PROCESSOR_DURABLE]
        again = await js.consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
        assert (again.config.ack_wait, again.config.max_deliver) == (7.0, 5)
        assert (await running.app.reconciler.run_once()).recreated == []
    finally:
        for close in running._closers:
            await close()


def _get_job(job: S.Job) -> jobs_pb2.GetJobRequest:
    return jobs_pb2.GetJobRequest(user_id=job.user_id, job_id=job.job_id)


def _get_task(task: S.Task) -> jobs_pb2.GetTaskRequest:
    return jobs_pb2.GetTaskRequest(user_id="alice", task_id=task.task_id)
