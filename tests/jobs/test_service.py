"""JobService over real gRPC, a real nats-server and SQLite; StorageService is a small fake."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY
from sqlalchemy import update

from services.common import messaging
from services.common.gen.radiology.v1 import common_pb2, jobs_pb2, storage_pb2, tasks_pb2
from services.common.protobuf import to_struct
from services.jobs import models

from .harness import Running, StorageServer, start_jobs

S = common_pb2


def listed(key: str, modified_at: float) -> storage_pb2.ObjectInfo:
    return storage_pb2.ObjectInfo(key=key, size=1, modified_at=modified_at)


def create_request(user: str, *names: str, task_type: str = "blur") -> jobs_pb2.CreateJobRequest:
    job_id = str(uuid.uuid4())
    return jobs_pb2.CreateJobRequest(
        job_id=job_id, user_id=user, task_type=task_type, params=to_struct({"sigma": 1.5}),
        inputs=[
            jobs_pb2.JobInput(filename=n, key=f"{user}/{job_id}/{n}", format="png", size=5) for n in names
        ],
    )


async def stream_tasks(r: Running, job_id: str) -> list[tuple[dict[str, str], tasks_pb2.TaskMessage]]:
    """Every message of this job in the tasks stream, with its headers."""
    info = await r.js.stream_info(messaging.TASKS_STREAM)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            raw = await r.js.get_msg(messaging.TASKS_STREAM, seq)
        except NotFoundError:
            continue
        msg = tasks_pb2.TaskMessage.FromString(raw.data)
        if msg.job_id == job_id:
            found.append((dict(raw.headers or {}), msg))
    return found


async def send_event(r: Running, task: S.Task, status: int, progress: int, **kw: Any) -> None:
    event = tasks_pb2.TaskEvent(task_id=task.task_id, job_id=task.job_id, status=status, progress=progress,
                                emitted_at=time.time(), **kw)
    await r.js.publish(messaging.event_subject(task.task_id), event.SerializeToString(),
                       headers={"Nats-Msg-Id": f"{task.task_id}:{progress}:{status}"})


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_create_job_publishes_one_message_per_task(jobs: Running) -> None:
    before = REGISTRY.get_sample_value("jobs_created_total") or 0
    req = create_request("alice", "scan.dcm", "brain.nii.gz", "scan.png")
    job = await jobs.stub.CreateJob(req)
    assert job.job_id == req.job_id and job.status == S.STATUS_PENDING and len(job.tasks) == 3
    assert REGISTRY.get_sample_value("jobs_created_total") == before + 1

    msgs = await stream_tasks(jobs, job.job_id)
    assert len(msgs) == 3
    by_id = {m.task_id: (h, m) for h, m in msgs}
    assert set(by_id) == {t.task_id for t in job.tasks}
    for task in job.tasks:
        headers, msg = by_id[task.task_id]
        assert headers["Nats-Msg-Id"] == task.task_id
        assert (msg.user_id, msg.task_type, msg.input_key) == ("alice", "blur", task.input_key)
        assert dict(msg.params) == {"sigma": 1.5}
    stems = {by_id[t.task_id][1].input_file: by_id[t.task_id][1].output_stem for t in job.tasks}
    assert stems["brain.nii.gz"] == "brain"
    assert len(set(stems.values())) == 3  # scan.dcm and scan.png cannot both use "scan"
    assert await jobs.app.repo.count_unpublished() == 0


async def test_invalid_requests(jobs: Running) -> None:
    for bad in ["", ".", "..", "../../etc", "a/b", "x" * 65, "al ice", "bob\x00"]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id=bad, job_id=str(uuid.uuid4())))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.stub.CreateJob(create_request(bad, "a.png"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    assert (await jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(user_id="a.b_c@d-e"))).jobs == []

    bad_requests = [
        create_request("alice"),  # no inputs
        create_request("alice", "a.png", task_type="blur.>"),  # would escape the subject
        create_request("alice", "a.png", "a.png"),  # duplicate names
    ]
    other_job = str(uuid.uuid4())
    for key in ["bob/other/a.png", f"alice/{other_job}/a.png", "alice/{job}/b.png", "alice/a.png"]:
        stolen = create_request("alice", "a.png")  # another user's file, another job's, a wrong name
        stolen.inputs[0].key = key.replace("{job}", stolen.job_id)
        bad_requests.append(stolen)
    for name in ("a\\b.png", "a\x01.png", "x" * 201):
        odd = create_request("alice", name)
        bad_requests.append(odd)
    for number in (float("nan"), float("inf")):
        not_json = create_request("alice", "a.png")
        not_json.params["sigma"] = number
        bad_requests.append(not_json)
    for req in bad_requests:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.stub.CreateJob(req)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, req
    for status in (99, -3):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(user_id="alice", status=status))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "status" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(user_id="alice", cursor="%%%"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(user_id="alice", limit=500))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_other_users_job_is_not_found_like_a_missing_one(jobs: Running) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    calls = [
        lambda u, j: jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id=u, job_id=j)),
        lambda u, j: jobs.stub.CancelJob(jobs_pb2.CancelJobRequest(user_id=u, job_id=j)),
        lambda u, j: jobs.stub.DeleteJob(jobs_pb2.DeleteJobRequest(user_id=u, job_id=j)),
    ]
    for call in calls:
        errors = []
        for job_id in (job.job_id, str(uuid.uuid4())):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call("bob", job_id)
            errors.append((info.value.code(), info.value.details()))
        assert errors[0] == errors[1] and errors[0][0] == grpc.StatusCode.NOT_FOUND
    task_errors = []
    for task_id in (job.tasks[0].task_id, str(uuid.uuid4())):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.stub.GetTask(jobs_pb2.GetTaskRequest(user_id="bob", task_id=task_id))
        task_errors.append((info.value.code(), info.value.details()))
    assert task_errors[0] == task_errors[1] and task_errors[0][0] == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await anext(aiter(jobs.stub.WatchJob(jobs_pb2.WatchJobRequest(user_id="bob", job_id=job.job_id))))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    mine = await jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id="alice", job_id=job.job_id))
    assert mine.status == S.STATUS_PENDING  # bob's cancel/delete did nothing


async def test_events_are_applied_at_once(jobs: Running) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png", "b.dcm"))
    a, b = job.tasks
    get = jobs_pb2.GetJobRequest(user_id="alice", job_id=job.job_id)
    started = time.monotonic()
    for step, p in (("fetched", 10), ("decoded", 40), ("processed", 70)):
        await send_event(jobs, a, S.STATUS_RUNNING, p, message=step)
    result = S.TaskResult(input_file="a.png", output_file=f"{a.task_id}_processed.png", task_type="blur")
    await send_event(jobs, a, S.STATUS_SUCCESS, 100, message="stored", result=result)
    await send_event(jobs, a, S.STATUS_RUNNING, 40, message="late")  # after SUCCESS: ignored
    await send_event(jobs, b, S.STATUS_FAILED, 10, message="failed", error="not a DICOM file")

    async def finished() -> bool:
        return (await jobs.stub.GetJob(get)).status == S.STATUS_FAILED

    await wait_for(finished)
    assert time.monotonic() - started < 1.0, "events must not wait for a poll interval"
    got = await jobs.stub.GetJob(get)
    assert got.progress == 100 and got.message == "b.dcm: not a DICOM file"
    ta, tb = got.tasks
    assert (ta.status, ta.progress, ta.message) == (S.STATUS_SUCCESS, 100, "stored")
    assert ta.result.output_file == result.output_file and ta.HasField("started_at")
    assert (tb.status, tb.error) == (S.STATUS_FAILED, "not a DICOM file")
    task = await jobs.stub.GetTask(jobs_pb2.GetTaskRequest(user_id="alice", task_id=a.task_id))
    assert task.result.input_file == "a.png"


async def test_undecodable_event_is_dropped_and_the_next_one_applied(jobs: Running) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    await jobs.js.publish(messaging.event_subject("garbage"), b"\xff\xff\xff not protobuf")
    await send_event(jobs, job.tasks[0], S.STATUS_SUCCESS, 100, message="stored")

    async def done() -> bool:
        j = await jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id="alice", job_id=job.job_id))
        return j.status == S.STATUS_SUCCESS

    await wait_for(done)

    async def drained() -> bool:  # everything acked (or termed): nothing left in the work queue
        return (await jobs.js.stream_info(messaging.EVENTS_STREAM)).state.messages == 0

    await wait_for(drained)


async def test_watch_job_streams_states_in_order_and_ends(jobs: Running) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    task = job.tasks[0]
    stream = jobs.stub.WatchJob(jobs_pb2.WatchJobRequest(user_id="alice", job_id=job.job_id))
    it = aiter(stream)

    async def nxt() -> S.Job:
        return await asyncio.wait_for(anext(it), 2.0)  # far below the 3 s safety-net re-read

    first = await nxt()
    assert first.status == S.STATUS_PENDING
    await send_event(jobs, task, S.STATUS_RUNNING, 40, message="decoded")
    running = await nxt()
    assert (running.status, running.progress) == (S.STATUS_RUNNING, 40)
    await send_event(jobs, task, S.STATUS_SUCCESS, 100, message="stored")
    done = await nxt()
    assert (done.status, done.progress) == (S.STATUS_SUCCESS, 100)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(it), 2.0)


async def test_watch_stops_cleanly_when_the_client_goes_away(jobs: Running) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    stream = jobs.stub.WatchJob(jobs_pb2.WatchJobRequest(user_id="alice", job_id=job.job_id))
    assert (await anext(aiter(stream))).status == S.STATUS_PENDING
    assert jobs.app.hub.watcher_count == 1
    stream.cancel()

    async def gone() -> bool:
        return jobs.app.hub.watcher_count == 0

    await wait_for(gone, 3.0)


async def test_cancel(jobs: Running) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png", "b.png"))
    cancelled_ids: list[str] = []

    async def on_cancelled(msg: Any) -> None:
        cancelled_ids.append(msg.data.decode())

    sub = await jobs.nc.subscribe(messaging.JOB_CANCELLED_SUBJECT, cb=on_cancelled)
    await jobs.nc.flush()
    await send_event(jobs, job.tasks[0], S.STATUS_SUCCESS, 100, message="stored")

    async def first_done() -> bool:
        t = await jobs.stub.GetTask(jobs_pb2.GetTaskRequest(user_id="alice", task_id=job.tasks[0].task_id))
        return t.status == S.STATUS_SUCCESS

    await wait_for(first_done)
    got = await jobs.stub.CancelJob(jobs_pb2.CancelJobRequest(user_id="alice", job_id=job.job_id))
    assert got.status == S.STATUS_CANCELLED
    assert [t.status for t in got.tasks] == [S.STATUS_SUCCESS, S.STATUS_CANCELLED]

    async def announced() -> bool:
        return cancelled_ids == [job.job_id]

    await wait_for(announced)
    # A processor's late event cannot revive it, and a second cancel returns it unchanged.
    await send_event(jobs, job.tasks[1], S.STATUS_SUCCESS, 100)
    await asyncio.sleep(0.2)
    again = await jobs.stub.CancelJob(jobs_pb2.CancelJobRequest(user_id="alice", job_id=job.job_id))
    assert again == got and cancelled_ids == [job.job_id]
    await sub.unsubscribe()


async def test_delete_calls_storage_then_removes_rows(jobs: Running, fake_storage: StorageServer) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    reply = await jobs.stub.DeleteJob(jobs_pb2.DeleteJobRequest(user_id="alice", job_id=job.job_id))
    assert reply.objects_deleted == 3
    assert fake_storage.servicer.prefixes == [f"alice/{job.job_id}/"]
    for call in (
        jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id="alice", job_id=job.job_id)),
        jobs.stub.GetTask(jobs_pb2.GetTaskRequest(user_id="alice", task_id=job.tasks[0].task_id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_delete_with_storage_down_is_unavailable_and_keeps_the_job(
    jobs: Running, fake_storage: StorageServer
) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    await fake_storage.server.stop(0)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.stub.DeleteJob(jobs_pb2.DeleteJobRequest(user_id="alice", job_id=job.job_id))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    kept = await jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id="alice", job_id=job.job_id))
    assert kept.status == S.STATUS_CANCELLED  # cancelled first, rows kept for a retry


async def test_list_jobs_paginates_newest_first(jobs: Running) -> None:
    ids = [(await jobs.stub.CreateJob(create_request("carol", "a.png"))).job_id for _ in range(5)]
    seen, cursor = [], ""
    while True:
        page = await jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(user_id="carol", limit=2, cursor=cursor))
        seen += [j.job_id for j in page.jobs]
        cursor = page.next_cursor
        if not cursor:
            break
    assert seen == ids[::-1]
    await jobs.stub.CancelJob(jobs_pb2.CancelJobRequest(user_id="carol", job_id=ids[1]))
    only = await jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(user_id="carol", status=S.STATUS_CANCELLED))
    assert [j.job_id for j in only.jobs] == [ids[1]]


async def test_outbox_publishes_after_nats_comes_back(
    nats_server: Any, fake_storage: StorageServer, tmp_path: Path
) -> None:
    server = type(nats_server)(tmp_path / "nats")
    server.start()
    r = await start_jobs(server.url, fake_storage.addr, tmp_path / "jobs.db")
    try:
        server.stop()

        async def disconnected() -> bool:
            return not r.app.nc.is_connected

        await wait_for(disconnected)
        job = await asyncio.wait_for(r.stub.CreateJob(create_request("alice", "a.png", "b.png")), 5)
        assert job.status == S.STATUS_PENDING  # the job is accepted even though NATS is down
        assert await r.app.repo.count_unpublished() == 2

        server.start()

        async def all_published() -> bool:
            return await r.app.repo.count_unpublished() == 0

        await wait_for(all_published, 15)
        msgs = await stream_tasks(r, job.job_id)
        assert sorted(h["Nats-Msg-Id"] for h, _ in msgs) == sorted(t.task_id for t in job.tasks)

        async def gauge_zero() -> bool:  # set by the pass right after it lets CreateJob go
            return REGISTRY.get_sample_value("outbox_unpublished") == 0

        await wait_for(gauge_zero, 5)

        # A crash after the publish but before marking (its claim's lease over by now): the outbox
        # publishes again and JetStream's duplicate window keeps exactly one message per task.
        async with r.app.repo.engine.begin() as conn:
            await conn.execute(
                update(models.tasks).where(models.tasks.c.job_id == job.job_id)
                .values(published=False, claimed_at=None)
            )
        await r.app.outbox.run_once()  # (or its timer's pass does it first)
        await wait_for(all_published, 5)
        assert len(await stream_tasks(r, job.job_id)) == 2

        # The event consumer noticed the restart too (its pull request died with the server).
        await send_event(r, job.tasks[0], S.STATUS_RUNNING, 40, message="decoded")

        async def applied() -> bool:
            j = await r.stub.GetJob(jobs_pb2.GetJobRequest(user_id="alice", job_id=job.job_id))
            return j.progress == 20

        await wait_for(applied, 4)
    finally:
        for close in r._closers:
            await close()
        server.stop()


async def _queued(jobs: Running, job_id: str) -> int:
    subjects = f"{messaging.TASKS_SUBJECT}.*.{job_id}.>"
    info = await jobs.js.stream_info(messaging.TASKS_STREAM, subjects_filter=subjects)
    return sum((info.state.subjects or {}).values())


async def test_cancel_purges_the_jobs_queued_tasks(jobs: Running) -> None:
    """No processor is running: the tasks wait in JetStream. Cancelling one job removes its task
    messages (a processor that starts later never sees them) and leaves the other job's alone."""
    kept = await jobs.stub.CreateJob(create_request("alice", "k.png"))
    job = await jobs.stub.CreateJob(create_request("alice", "a.png", "b.png"))
    assert await _queued(jobs, job.job_id) == 2
    assert await _queued(jobs, kept.job_id) == 1
    await jobs.stub.CancelJob(jobs_pb2.CancelJobRequest(user_id="alice", job_id=job.job_id))
    assert await _queued(jobs, job.job_id) == 0
    assert await _queued(jobs, kept.job_id) == 1
    # Deleting purges too.
    await jobs.stub.DeleteJob(jobs_pb2.DeleteJobRequest(user_id="alice", job_id=kept.job_id))
    assert await _queued(jobs, kept.job_id) == 0


async def test_outputs_stored_for_a_deleted_job_are_removed(
    jobs: Running, fake_storage: StorageServer
) -> None:
    """A processor finished storing outputs just after the job was deleted: its SUCCESS event names
    them, and the jobs service removes them (only keys inside that job's folder)."""
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    kept = await jobs.stub.CreateJob(create_request("alice", "k.png"))
    await jobs.stub.DeleteJob(jobs_pb2.DeleteJobRequest(user_id="alice", job_id=job.job_id))
    task = job.tasks[0]
    mine = [f"alice/{job.job_id}/a_processed.png", f"alice/{job.job_id}/a_preview.png"]
    foreign = f"alice/{kept.job_id}/k.png"  # a wrong or hostile key outside the job is left alone
    result = S.TaskResult(input_file="a.png", output_file="a_processed.png", outputs=[
        S.Output(filename=k.rsplit("/", 1)[1], key=k, role="primary") for k in [*mine, foreign]
    ])
    await send_event(jobs, task, S.STATUS_SUCCESS, 100, message="stored", result=result)

    async def removed() -> bool:
        return sorted(fake_storage.servicer.keys) == sorted(mine)

    await wait_for(removed)
    # A late event for a job that still exists removes nothing.
    await send_event(jobs, kept.tasks[0], S.STATUS_SUCCESS, 100, message="stored", result=S.TaskResult(
        outputs=[S.Output(filename="k_processed.png", key=f"alice/{kept.job_id}/k_processed.png")]))
    await asyncio.sleep(0.3)
    assert sorted(fake_storage.servicer.keys) == sorted(mine)


async def test_janitor_removes_only_old_folders_that_no_job_owns(
    jobs: Running, fake_storage: StorageServer
) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    orphan, young = str(uuid.uuid4()), str(uuid.uuid4())
    old, now = time.time() - 2 * jobs.settings.orphan_grace_seconds, time.time()
    fake_storage.servicer.listing = [
        listed(f"alice/{job.job_id}/a.png", old),  # its job exists: kept
        listed(f"alice/{orphan}/x.png", old),  # no job: removed
        listed(f"alice/{orphan}/x_processed.png", old),
        listed(f"alice/{young}/y.png", now),  # maybe an upload still arriving: kept
        listed(f"bob/{job.job_id}/a.png", old),  # that job id belongs to alice, not bob: removed
        listed("stray-object", old),  # not a platform key: ignored
        listed(f"alice/not-a-job/{orphan}.png", old),  # not a job's folder: ignored too
    ]
    removed = await jobs.app.janitor.sweep()
    assert sorted(removed) == sorted([f"alice/{orphan}/", f"bob/{job.job_id}/"])
    assert sorted(fake_storage.servicer.prefixes) == sorted(removed)


async def test_one_bad_event_does_not_hold_back_the_others(
    jobs: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event that cannot be applied (here: the rules raise for it) is dropped on its own; the
    other events of its batch, other users' included, are applied."""
    from services.jobs import rules

    bad_job = await jobs.stub.CreateJob(create_request("mallory", "x.png"))
    good_job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    poisoned = bad_job.tasks[0].task_id
    real_apply = rules.apply_event

    def apply_event(task, event, now):  # type: ignore[no-untyped-def]
        if event.task_id == poisoned:
            raise OverflowError("an event no rule can digest")
        return real_apply(task, event, now)

    monkeypatch.setattr(rules, "apply_event", apply_event)
    await send_event(jobs, bad_job.tasks[0], S.STATUS_RUNNING, 40)
    await send_event(jobs, good_job.tasks[0], S.STATUS_SUCCESS, 100, message="stored")

    async def good_done() -> bool:
        job = await jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id="alice", job_id=good_job.job_id))
        return job.status == S.STATUS_SUCCESS

    await wait_for(good_done)
    # The bad event was terminated, not left to be redelivered for ever.
    info = await jobs.js.consumer_info(messaging.EVENTS_STREAM, messaging.JOBS_DURABLE)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_absurd_event_times_fall_back_to_the_service_clock(jobs: Running) -> None:
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    task = job.tasks[0]
    for progress, emitted_at in ((10, 1e20), (20, -1e20), (30, float("nan")), (40, float("inf"))):
        event = tasks_pb2.TaskEvent(task_id=task.task_id, job_id=task.job_id, status=S.STATUS_RUNNING,
                                    progress=progress, emitted_at=emitted_at)
        await jobs.js.publish(messaging.event_subject(task.task_id), event.SerializeToString(),
                              headers={"Nats-Msg-Id": f"{task.task_id}:{progress}:absurd"})

    async def applied() -> bool:
        t = await jobs.stub.GetTask(jobs_pb2.GetTaskRequest(user_id="alice", task_id=task.task_id))
        return t.status == S.STATUS_RUNNING and t.progress == 40

    await wait_for(applied)
