"""Task events are untrusted: a forged or invalid event (outputs outside the task's own job folder,
unknown media types, bad names) is dropped and never applied; texts are made plain and bounded."""

from __future__ import annotations

import time
from typing import Any

import pytest

from services.common import messaging
from services.common.gen.radiology.v1 import common_pb2, jobs_pb2, tasks_pb2
from services.jobs.event_checks import MAX_ERROR_CHARS, MAX_MESSAGE_CHARS, plain_text
from services.jobs.models import TaskState
from services.jobs.repository import Repository

from .harness import Running
from .test_repository import create
from .test_service import create_request, send_event, wait_for

SUCCESS, FAILED = common_pb2.STATUS_SUCCESS, common_pb2.STATUS_FAILED


def output(task: TaskState | Any, name: str | None = None, **fields: Any) -> common_pb2.Output:
    name = name or f"{task.output_stem}_processed.png"
    values: dict[str, Any] = {"filename": name, "key": f"{task.user_id}/{task.job_id}/{name}",
                              "media_type": "image/png", "role": "primary", "size": 10, "sha256": "ab" * 32}
    values.update(fields)
    return common_pb2.Output(**values)


def success(task: TaskState | Any, *outputs: common_pb2.Output, **result: Any) -> tasks_pb2.TaskEvent:
    outs = list(outputs) or [output(task)]
    fields: dict[str, Any] = {"input_file": task.input_file, "output_file": outs[0].filename,
                              "task_type": "blur", "outputs": outs}
    fields.update(result)
    return tasks_pb2.TaskEvent(task_id=task.task_id, job_id=task.job_id, status=SUCCESS, progress=100,
                               message="stored", result=common_pb2.TaskResult(**fields))


def forged_events(alice: Any, sibling: Any, other: Any, bob: Any) -> dict[str, tasks_pb2.TaskEvent]:
    name = f"{alice.output_stem}_processed.png"
    return {
        "key in another user's folder": success(alice, output(alice, key=f"bob/{bob.job_id}/{name}")),
        "key in another job of the same user": success(
            alice, output(alice, key=f"alice/{other.job_id}/{name}")),
        "key naming the task's input": success(alice, output(alice, name=alice.input_file)),
        "key naming another task's output": success(
            alice, output(alice, name=f"{sibling.output_stem}_processed.png")),
        "key and file name disagree": success(alice, output(alice, key=f"alice/{alice.job_id}/other.png")),
        "path in the file name": success(alice, output(alice, name="../../etc/passwd")),
        "key with extra segments": success(alice, output(alice, key=f"alice/{alice.job_id}/x/{name}")),
        "text/html media type": success(alice, output(alice, media_type="text/html")),
        "no media type": success(alice, output(alice, media_type="")),
        "unknown role": success(alice, output(alice, role="script")),
        "negative size": success(alice, output(alice, size=-1)),
        "malformed sha256": success(alice, output(alice, sha256="<script>")),
        "output_file not the primary": success(alice, output_file="evil.html"),
        "input_file of someone else": success(alice, input_file="bobs-scan.png"),
        "too many outputs": success(alice, *[output(alice) for _ in range(40)]),
        "markup as task_type": success(alice, task_type="<b>blur</b>"),
    }


async def test_forged_results_are_dropped_and_a_valid_one_applied(repo: Repository) -> None:
    alice, sibling = (await create(repo, "alice", "scan.png", "second.png")).tasks
    other = (await create(repo, "alice", "scan.png")).tasks[0]
    bob = (await create(repo, "bob", "b.png")).tasks[0]
    for case, event in forged_events(alice, sibling, other, bob).items():
        result = await repo.apply_events([event])
        assert result.applied == 0, case
        task = await repo.get_task("alice", alice.task_id)
        assert task is not None and task.status == "PENDING" and task.result is None, case

    preview = output(alice, name=f"{alice.output_stem}_preview.png", role="preview")
    result = await repo.apply_events([success(alice, output(alice), preview)])
    assert result.applied == 1
    task = await repo.get_task("alice", alice.task_id)
    assert task is not None and task.status == "SUCCESS"
    assert [o["key"] for o in task.result["outputs"]] == [
        f"alice/{alice.job_id}/{alice.output_stem}_processed.png",
        f"alice/{alice.job_id}/{alice.output_stem}_preview.png",
    ]


async def test_one_forged_event_does_not_hold_back_the_others(repo: Repository) -> None:
    a = (await create(repo, "alice", "a.png")).tasks[0]
    b = (await create(repo, "bob", "b.png")).tasks[0]
    forged = success(a, output(a, key=f"bob/{b.job_id}/{b.output_stem}_processed.png"))
    result = await repo.apply_events([forged, success(b)])
    assert result.applied == 1
    assert (await repo.get_task("alice", a.task_id)).status == "PENDING"  # type: ignore[union-attr]
    assert (await repo.get_task("bob", b.task_id)).status == "SUCCESS"  # type: ignore[union-attr]


async def test_error_texts_are_plain_and_bounded(repo: Repository) -> None:
    task = (await create(repo, "alice", "x.png")).tasks[0]
    markup = '<img src=x onerror="alert(1)">'
    event = tasks_pb2.TaskEvent(
        task_id=task.task_id, job_id=task.job_id, status=FAILED, progress=100,
        message="failed\x1b[31m\u202eevil\x00" + "m" * 2000,
        error=f"{markup}\r\nsecond line\x07\u2066" + "e" * 5000,
    )
    assert (await repo.apply_events([event])).applied == 1
    got = await repo.get_task("alice", task.task_id)
    assert got is not None and got.status == "FAILED"
    # kept as text (the UI shows it as text), minus what is not text
    assert got.error.startswith(markup + "  second line")
    assert len(got.error) == MAX_ERROR_CHARS and got.error.endswith("…")
    assert got.message.startswith("failed[31mevil") and len(got.message) == MAX_MESSAGE_CHARS
    assert not any(ch in got.error + got.message for ch in "\x1b\x00\x07\r\n\u202e\u2066")


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "plain"),
    ("a\tb\nc", "a b c"),
    ("\x00\x1f\x7f\x85ok\u200f", "ok"),
    ("ü 日本 ✓", "ü 日本 ✓"),
    ("x" * 20, "x" * 9 + "…"),
])
def test_plain_text(text: str, expected: str) -> None:
    assert plain_text(text, 10) == expected


async def test_the_running_service_drops_a_forged_event_from_nats(jobs: Running) -> None:
    """The same through NATS and the event consumer: a forged SUCCESS pointing at bob's file is
    dropped (and acked, so it does not come back); the real one after it is applied."""
    job = await jobs.stub.CreateJob(create_request("alice", "a.png"))
    bob = await jobs.stub.CreateJob(create_request("bob", "b.png"))
    task = job.tasks[0]
    stem = "a"
    forged = common_pb2.TaskResult(input_file="a.png", output_file=f"{stem}_processed.png", task_type="blur",
                                   outputs=[common_pb2.Output(filename=f"{stem}_processed.png",
                                                              key=f"bob/{bob.job_id}/b.png",
                                                              media_type="text/html", role="primary")])
    await send_event(jobs, task, SUCCESS, 100, message="stored", result=forged)
    get = jobs_pb2.GetJobRequest(user_id="alice", job_id=job.job_id)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert (await jobs.stub.GetJob(get)).status == common_pb2.STATUS_PENDING
    real = common_pb2.TaskResult(input_file="a.png", output_file=f"{stem}_processed.png", task_type="blur",
                                 outputs=[common_pb2.Output(filename=f"{stem}_processed.png",
                                                            key=f"alice/{job.job_id}/{stem}_processed.png",
                                                            media_type="image/png", role="primary")])
    event = tasks_pb2.TaskEvent(task_id=task.task_id, job_id=job.job_id, status=SUCCESS, progress=100,
                                message="stored", result=real, emitted_at=time.time())
    await jobs.js.publish(messaging.event_subject(task.task_id), event.SerializeToString(),
                          headers={"Nats-Msg-Id": f"{task.task_id}:real"})

    async def applied() -> bool:
        return (await jobs.stub.GetJob(get)).status == SUCCESS

    await wait_for(applied)
    got = (await jobs.stub.GetJob(get)).tasks[0]
    assert [o.key for o in got.result.outputs] == [f"alice/{job.job_id}/{stem}_processed.png"]
    bob_job = await jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id="bob", job_id=bob.job_id))
    assert bob_job.status == common_pb2.STATUS_PENDING
