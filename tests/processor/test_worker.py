"""The JetStream worker against a real nats-server and an in-memory StorageService."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from services.common import messaging
from services.common.gen.radiology.v1 import common_pb2
from services.common.protobuf import from_struct
from services.processor import operations
from services.processor import worker as worker_module
from services.processor.imaging import ImagingError
from services.processor.pool import ProcessPool
from services.processor.worker import retry_delay
from tests.conftest import ROOT, NatsServer, free_port

from .conftest import CORRUPT_PNG, SLOW, FakeStorage, Harness, png_bytes, slow_png
from .narrow_ops import register_narrow_ops

RUNNING, SUCCESS, FAILED = common_pb2.STATUS_RUNNING, common_pb2.STATUS_SUCCESS, common_pb2.STATUS_FAILED
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _steps(events) -> list[tuple[int, int, str]]:
    return [(e.status, e.progress, e.message) for e in events]


async def _settled(h: Harness, timeout: float = 10.0) -> None:
    """Wait until the consumer has nothing pending or awaiting an ack."""
    deadline = time.monotonic() + timeout
    while True:
        info = await h.consumer()
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        assert time.monotonic() < deadline, f"consumer not settled: {info}"
        await asyncio.sleep(0.05)


async def test_png_blur_reports_its_steps_stores_outputs_and_acks(harness: Harness) -> None:
    await harness.worker()
    data = png_bytes(80, 60)
    done_before = _metric("tasks_processed_total", task_type="blur", outcome="success")
    latency_before = _metric("task_latency_seconds_count", task_type="blur")
    task = await harness.publish_task(
        data, params={"sigma": 2}, headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    )

    final = await harness.wait_terminal(task.task_id)
    events = harness.events_of(task.task_id)
    # The steps inside the operation are held back and dropped when a later one overtakes them
    # (pipeline.PROGRESS_HOLD_SECONDS): this task takes a few ms, but a loaded machine may hold it.
    steps = _steps(events)
    assert steps[0] == (RUNNING, 10, "fetched") and steps[-1] == (SUCCESS, 100, "stored")
    assert set(steps[1:-1]) <= {(RUNNING, 40, "decoded"), (RUNNING, 70, "processed")}
    assert [p for _, p, _ in steps] == sorted(set(p for _, p, _ in steps))
    assert [s.headers["Nats-Msg-Id"] for s in harness.events if s.event.task_id == task.task_id] == [
        f"{task.task_id}:{p}:{'SUCCESS' if p == 100 else 'RUNNING'}" for _, p, _ in steps
    ]
    result = final.result
    assert result.input_file == "scan.png" and result.task_type == "blur"
    assert result.output_file == "scan_processed.png" == result.outputs[0].filename
    assert result.outputs[0].role == "primary"
    assert from_struct(result.metadata)["format"] == "png"
    for out in result.outputs:
        assert out.key == f"alice/{task.job_id}/{out.filename}"
        stored, content_type = harness.storage.objects[out.key]
        assert out.sha256 == hashlib.sha256(stored).hexdigest() and out.size == len(stored)
        assert content_type == out.media_type == "image/png"
    blurred = np.asarray(Image.open(io.BytesIO(harness.storage.objects[result.outputs[0].key][0])))
    original = np.asarray(Image.open(io.BytesIO(data)))
    assert blurred.shape == original.shape

    def roughness(a: np.ndarray) -> float:
        return float(np.abs(np.diff(a.astype(float), axis=1)).mean())

    assert roughness(blurred) < roughness(original) / 2

    # the trace continues from the task message into every event
    assert all(TRACE_ID in s.headers.get("traceparent", "") for s in harness.events)

    await _settled(harness)
    assert list((harness.data_dir / "tmp").rglob("task-*")) == []  # temp files removed
    assert _metric("tasks_processed_total", task_type="blur", outcome="success") == done_before + 1
    assert _metric("task_latency_seconds_count", task_type="blur") == latency_before + 1
    assert _metric("worker_active_tasks") == 0


async def test_a_step_that_lasts_is_reported(harness: Harness) -> None:
    await harness.worker()
    task = await harness.publish_task(slow_png(), params=SLOW)  # a blur of about a second
    await harness.wait_terminal(task.task_id)
    steps = _steps(harness.events_of(task.task_id))
    assert steps[:2] == [(RUNNING, 10, "fetched"), (RUNNING, 40, "decoded")]
    assert steps[-1] == (SUCCESS, 100, "stored")
    assert [p for _, p, _ in steps] == sorted(set(p for _, p, _ in steps))


async def test_corrupt_file_fails_once_with_clear_message(harness: Harness, tmp_path: Path) -> None:
    await harness.worker(ack_wait_seconds=1.0)
    errors_before = _metric("error_rate_total", task_type="blur")
    task = await harness.publish_task(CORRUPT_PNG, input_file="broken.png")

    final = await harness.wait_terminal(task.task_id)
    (tmp_path / "broken.png").write_bytes(CORRUPT_PNG)
    (tmp_path / "out").mkdir()
    try:
        operations.run(
            "blur",
            operations.validate_params("blur", {}),
            str(tmp_path / "broken.png"),
            str(tmp_path / "out"),
            "broken",
        )
        raise AssertionError("the corrupt file was accepted")
    except ImagingError as exc:
        expected = str(exc)
    assert final.status == FAILED and final.error == expected and "Traceback" not in final.error
    await _settled(harness)
    await asyncio.sleep(2.5)  # beyond ack_wait: nothing comes back
    assert [e.status for e in harness.events_of(task.task_id)] == [RUNNING, FAILED]
    assert (await harness.consumer()).num_redelivered == 0
    assert not [k for k in harness.storage.puts if task.job_id in k]
    assert _metric("error_rate_total", task_type="blur") == errors_before + 1


async def test_crashed_pool_process_is_replaced_and_the_task_retried(harness: Harness) -> None:
    await harness.worker(concurrency=1, retry_backoff_seconds=0.1)
    task = await harness.publish_task(slow_png(), params=SLOW)
    await harness.wait_for(lambda: any(e.progress == 40 for e in harness.events_of(task.task_id)))
    broken = harness.pool._executor
    for proc in list(broken._processes.values()):  # a worker process dies mid-operation
        os.kill(proc.pid, signal.SIGKILL)

    final = await harness.wait_terminal(task.task_id, 30)
    assert final.status == SUCCESS
    assert harness.pool._executor is not broken
    await _settled(harness)
    assert (await harness.consumer()).delivered.consumer_seq == 2  # retried once


async def test_queue_depth_counts_waiting_tasks(harness: Harness) -> None:
    worker = await harness.worker(concurrency=1, workers=1, queue_depth_interval=0.1)
    first = await harness.publish_task(slow_png(), params=SLOW)
    for _ in range(3):
        await harness.publish_task(png_bytes())
    await harness.wait_for(lambda: harness.events_of(first.task_id))
    await harness.wait_for(lambda: _metric("queue_depth") == 3, 5)
    await worker.drain()


async def test_transient_storage_error_retries_with_backoff(harness: Harness) -> None:
    await harness.worker(retry_backoff_seconds=0.3)
    harness.storage.fail_gets = 2
    task = await harness.publish_task(png_bytes())

    final = await harness.wait_terminal(task.task_id)
    assert final.status == SUCCESS
    t = harness.storage.get_times
    assert len(t) == 3
    # nak delays 0.3 s then 0.6 s (backoff * 2**(n-1)); generous upper bounds for a busy machine
    assert 0.25 <= t[1] - t[0] < 1.5 and 0.55 <= t[2] - t[1] < 2.0
    await _settled(harness)


def test_retry_delay_doubles_up_to_its_cap() -> None:
    assert [retry_delay(n, 1.0, 30.0) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 4, 8, 16, 30, 30]
    assert retry_delay(10_000, 1.0, 30.0) == 30.0  # no overflow after days of redelivery


async def test_storage_down_never_fails_a_task_and_stops_pulling(harness: Harness) -> None:
    worker = await harness.worker(concurrency=2, retry_backoff_seconds=0.1, retry_backoff_max_seconds=0.3,
                                  rpc_timeout_seconds=1.0)
    await harness.storage.stop()
    first = await harness.publish_task(png_bytes())
    await harness.wait_for(lambda: not worker.storage_available, 15)

    # While storage is down this replica pulls nothing new: the tasks wait in the stream (at most
    # one delivery by a pull already open, handed back at once), and no task fails.
    later = [await harness.publish_task(png_bytes(seed=n)) for n in range(3)]
    before = (await harness.consumer()).delivered.consumer_seq
    await asyncio.sleep(2.0)
    assert (await harness.consumer()).delivered.consumer_seq <= before + 1
    assert all(harness.events_of(t.task_id) == [] for t in [first, *later])

    await harness.storage.start()
    for task in [first, *later]:
        assert (await harness.wait_terminal(task.task_id, 30)).status == SUCCESS
    assert worker.storage_available
    await _settled(harness)


async def test_a_task_past_its_deadline_fails_with_a_clear_message(harness: Harness) -> None:
    await harness.worker(retry_backoff_seconds=0.1, retry_backoff_max_seconds=0.2,
                         rpc_timeout_seconds=1.0, task_deadline_seconds=2.0)
    harness.storage.fail_gets = 1_000
    task = await harness.publish_task(png_bytes())

    final = await harness.wait_terminal(task.task_id, 30)
    assert final.status == FAILED
    # "...: storage unavailable (UNAVAILABLE)", or without the cause when the deadline passed between tries
    assert final.error.startswith("not finished within the task deadline of 2 s")
    assert final.error.removeprefix("not finished within the task deadline of 2 s") in (
        "", ": storage unavailable (UNAVAILABLE)")  # details such as addresses stay in the log
    assert [e.status for e in harness.events_of(task.task_id)] == [FAILED]
    assert len(harness.storage.get_times) >= 3  # it waited, retrying, until the deadline
    await _settled(harness)


async def test_a_task_created_before_its_deadline_is_refused_at_once(harness: Harness) -> None:
    await harness.worker(task_deadline_seconds=60.0)
    task = await harness.publish_task(png_bytes(), dispatched_at=time.time() - 120)
    final = await harness.wait_terminal(task.task_id)
    assert final.status == FAILED
    assert final.error == "not finished within the task deadline of 1 min"
    assert harness.storage.get_times == []  # never fetched


async def test_a_second_copy_of_a_running_task_does_not_run_again(harness: Harness) -> None:
    worker = await harness.worker(concurrency=2, workers=2)
    task = await harness.publish_task(slow_png(), params=SLOW)
    await harness.wait_for(lambda: harness.events_of(task.task_id))
    # The reconciler's republish: the same TaskMessage under a new Nats-Msg-Id.
    await harness.republish(task)
    final = await harness.wait_terminal(task.task_id, 30)
    assert final.status == SUCCESS
    await _settled(harness)
    assert len(harness.storage.get_times) == 1  # one run fetched the input
    assert worker.attempts.running() == 0

    # A new message for a task finished here (the reconciler republishes only when the task's
    # events were lost) runs again, and the outputs stored first stay.
    stored = dict(harness.storage.objects)
    await harness.republish(task)
    await harness.wait_for(lambda: len(harness.storage.get_times) == 2, 30)
    await _settled(harness)
    assert harness.storage.objects == stored


async def test_an_error_of_a_storage_that_answers_fails_the_task_after_a_few_attempts(
    harness: Harness,
) -> None:
    """Not an outage (storage answers its health check): a fault with this object, retried a few
    times, then a clear failure instead of hours of retries; the replica keeps pulling."""
    worker = await harness.worker(retry_backoff_seconds=0.05, retry_backoff_max_seconds=0.1)
    harness.storage.fail_gets, harness.storage.fail_code = 1_000, grpc.StatusCode.INTERNAL
    task = await harness.publish_task(png_bytes())
    final = await harness.wait_terminal(task.task_id, 30)
    assert final.status == FAILED
    attempts = worker_module.STORAGE_ERROR_ATTEMPTS
    assert final.error.startswith(f"storage error after {attempts} attempts (INTERNAL)")
    assert "127.0.0.1" not in final.error
    assert len(harness.storage.get_times) == worker_module.STORAGE_ERROR_ATTEMPTS
    assert worker.storage_available
    await _settled(harness)


async def test_a_redelivery_to_a_frozen_attempt_leaves_it_to_that_attempt(harness: Harness) -> None:
    # ack_wait shorter than the run and no keep-alive reaching the server (as under SIGSTOP):
    # the server redelivers the message the running attempt holds.
    worker = await harness.worker(concurrency=2, workers=2, ack_wait_seconds=0.5)
    worker._keep_alive = _frozen_keep_alive  # type: ignore[method-assign]
    task = await harness.publish_task(slow_png(4000), params=SLOW)
    final = await harness.wait_terminal(task.task_id, 60)
    assert final.status == SUCCESS
    await _settled(harness, 20)
    info = await harness.consumer()
    assert info.delivered.consumer_seq >= 2  # it was redelivered while it ran
    assert len(harness.storage.get_times) == 1  # and ran once
    assert len([k for k in harness.storage.puts if "_processed" in k]) == 1


async def test_another_replicas_late_run_keeps_the_stored_outputs(harness: Harness) -> None:
    first = await harness.worker()
    task = await harness.publish_task(png_bytes())
    assert (await harness.wait_terminal(task.task_id)).status == SUCCESS
    await _settled(harness)
    outputs = {k: v for k, v in harness.storage.objects.items() if k != task.input_key}
    assert outputs
    # What users see now; marked so that a rewrite (even with identical bytes) would show.
    for key, (_, media_type) in outputs.items():
        harness.storage.objects[key] = (b"seen by users", media_type)

    await first.drain()
    await harness.worker()  # a replica that never ran the task gets a copy of it
    await harness.republish(task)
    await harness.wait_for(lambda: len(harness.storage.get_times) == 2)
    await _settled(harness)
    assert all(harness.storage.objects[k][0] == b"seen by users" for k in outputs)


async def _frozen_keep_alive(msg: object) -> None:
    await asyncio.Event().wait()


async def test_a_deleted_consumer_is_waited_for_not_recreated(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the jobs service defines the durable: a processor reports not ready while it is missing,
    and works again once the jobs service has re-created it (with the tasks queued meanwhile)."""
    monkeypatch.setattr(worker_module, "CONSUMER_CHECK_INTERVAL", 0.2)
    worker = await harness.worker(ack_wait_seconds=6.0)
    assert harness.nc is not None
    js = harness.nc.jetstream()
    await js.delete_consumer(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
    problem = await worker.consumer_problem()
    assert problem is not None and "waiting for the jobs service" in problem
    task = await harness.publish_task(png_bytes())
    await asyncio.sleep(1.5)  # several checks: the worker waits, it re-creates nothing
    assert not await messaging.consumer_exists(js, messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
    assert await worker.consumer_problem() is not None and harness.events_of(task.task_id) == []

    # The jobs service (its reconciler) re-creates it, here with another ack_wait.
    await messaging.ensure_task_consumer(js, ack_wait=3.0, max_deliver=-1)
    await harness.wait_for(lambda: worker.consumer_rebound == 1, 10)
    assert await worker.consumer_problem() is None
    assert worker.ack_wait == 3.0  # keep-alives follow the consumer's ack_wait
    assert (await harness.wait_terminal(task.task_id, 20)).status == SUCCESS


async def test_runs_several_tasks_at_once(harness: Harness) -> None:
    await harness.worker(concurrency=2, workers=2)
    tasks = [
        await harness.publish_task(slow_png(2500), params=SLOW, input_file=f"s{i}.png") for i in range(2)
    ]
    for t in tasks:
        assert (await harness.wait_terminal(t.task_id, 60)).status == SUCCESS

    def window(task_id: str) -> tuple[float, float]:
        times = [e.emitted_at for e in harness.events_of(task_id)]
        return min(times), max(times)

    (a0, a1), (b0, b1) = window(tasks[0].task_id), window(tasks[1].task_id)
    assert a0 < b1 and b0 < a1, "the two tasks did not overlap"
    await _settled(harness)


async def test_task_of_cancelled_job_is_acked_without_work(harness: Harness) -> None:
    worker = await harness.worker()
    job_id = "cancelled-job"
    assert harness.nc is not None
    # Core NATS: an announcement sent before the worker has subscribed is lost, so repeat it
    # until the worker has heard it (a few ms normally).
    for _ in range(200):
        await harness.nc.publish(messaging.JOB_CANCELLED_SUBJECT, job_id.encode())
        await harness.nc.flush()
        await asyncio.sleep(0.025)
        if job_id in worker.cancelled:
            break
    assert job_id in worker.cancelled
    skipped = await harness.publish_task(png_bytes(), job_id=job_id)
    other = await harness.publish_task(png_bytes())

    assert (await harness.wait_terminal(other.task_id)).status == SUCCESS
    await _settled(harness)
    assert harness.events_of(skipped.task_id) == []
    assert harness.storage.get_times and len(harness.storage.get_times) == 1  # only `other` was read
    assert not [k for k in harness.storage.puts if job_id in k]


async def test_drain_finishes_in_flight_work_and_leaves_the_rest(harness: Harness) -> None:
    worker = await harness.worker(concurrency=1, workers=1, drain_grace=30)
    first = await harness.publish_task(slow_png(), params=SLOW)
    second = await harness.publish_task(png_bytes())
    await harness.wait_for(lambda: harness.events_of(first.task_id))

    await worker.drain()
    assert harness.events_of(first.task_id)[-1].status == SUCCESS
    assert harness.events_of(second.task_id) == []
    info = await harness.consumer()
    assert info.num_pending == 1 and info.num_ack_pending == 0  # second is still queued, untouched


async def test_drain_hands_unfinished_work_to_another_replica(harness: Harness) -> None:
    first = await harness.worker(concurrency=1, workers=1, drain_grace=0.2, ack_wait_seconds=30)
    task = await harness.publish_task(slow_png(), params=SLOW)
    await harness.wait_for(lambda: harness.events_of(task.task_id))

    started = time.monotonic()
    await first.drain()
    assert first.handed_back == 1
    assert not any(e.status == SUCCESS for e in harness.events_of(task.task_id))

    await harness.worker(concurrency=1, workers=1)  # another replica takes it at once, not after ack_wait
    final = await harness.wait_terminal(task.task_id, 25)
    assert final.status == SUCCESS and time.monotonic() - started < 25
    await _settled(harness)
    assert sorted(set(harness.storage.puts)) == [o.key for o in final.result.outputs]


async def test_an_input_the_operation_does_not_accept_fails_once_with_a_clear_message(
    nats_srv: NatsServer, storage: FakeStorage, tmp_path: Path
) -> None:
    # A pool of one process, which registers the narrow test operations, so the real worker runs
    # them as it runs any operation.
    pool = ProcessPool(1)
    await pool.start()
    h = Harness(nats_srv, storage, pool, tmp_path / "data")
    try:
        await pool._submit(register_narrow_ops)
        await h.open()
        await h.worker(workers=1)
        wrong_kind = await h.publish_task(png_bytes(), task_type="volume_blur")
        wrong_format = await h.publish_task(png_bytes(), task_type="dicom_blur")
        for task, error in (
            (wrong_kind, "volume_blur does not accept a 2D image; it needs a 3D volume"),
            (wrong_format, "dicom_blur does not accept PNG files; it accepts DICOM or DICOM series (ZIP)"),
        ):
            final = await h.wait_terminal(task.task_id)
            assert (final.status, final.error, final.message) == (FAILED, error, error)
            # refused before the operation ran: nothing decoded, nothing stored, no retry
            assert _steps(h.events_of(task.task_id)) == [(RUNNING, 10, "fetched"), (FAILED, 100, error)]
            assert not [k for k in storage.puts if task.job_id in k]
        await _settled(h)
        assert (await h.consumer()).num_redelivered == 0
    finally:
        await h.close()
        await asyncio.to_thread(pool.shutdown)


# --- the real server process ----------------------------------------------------------------------


async def _start_server(h: Harness, storage: FakeStorage, log: Path) -> subprocess.Popen[bytes]:
    assert h.nc is not None  # as the jobs service: the durable, ack_wait 2 s (the processor reads it)
    await messaging.ensure_task_consumer(h.nc.jetstream(), ack_wait=2.0, max_deliver=-1)
    env = {
        **os.environ,
        "RADIOLOGY_NATS_URL": h.nats_server.url,
        "RADIOLOGY_STORAGE_ADDR": storage.addr,
        "RADIOLOGY_PROCESSOR_ADDR": f"127.0.0.1:{free_port()}",
        "RADIOLOGY_DATA_DIR": str(h.data_dir),
        "RADIOLOGY_WORKERS": "1",
        "RADIOLOGY_SHUTDOWN_GRACE_SECONDS": "30",
    }
    # Own session: SIGKILL of the group takes the pool's processes too, like a container kill.
    return subprocess.Popen(
        [sys.executable, "-m", "services.processor.server"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the processor did not exit"
        await asyncio.sleep(0.05)
    return proc.returncode


async def test_server_killed_mid_task_redelivers_and_finishes_once(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "processor.log"
    proc = await _start_server(harness, harness.storage, log)
    try:
        task = await harness.publish_task(slow_png(4000), params={"sigma": 50})
        await harness.wait_for(lambda: harness.events_of(task.task_id), 30)
        os.killpg(proc.pid, signal.SIGKILL)
        await _wait_exit(proc, 10)
        assert not any(e.status == SUCCESS for e in harness.events_of(task.task_id))

        assert list((harness.data_dir / "tmp").rglob("task-*"))  # what the killed process left

        proc = await _start_server(harness, harness.storage, log)
        final = await harness.wait_terminal(task.task_id, 60)
        assert final.status == SUCCESS, log.read_text()[-3000:]
        await _settled(harness)
        await asyncio.sleep(0.3)
        assert [e.status for e in harness.events_of(task.task_id)].count(SUCCESS) == 1
        stored = sorted(k for k in harness.storage.objects if k.startswith(f"alice/{task.job_id}/"))
        assert stored == sorted([task.input_key, *(o.key for o in final.result.outputs)])
        assert list((harness.data_dir / "tmp").rglob("task-*")) == []  # cleared on restart
        info = await harness.consumer()
        # delivered twice: the killed attempt and the finished one (in_progress kept the 3 s
        # task from a redelivery with ack_wait 2 s)
        assert info.delivered.stream_seq == 1 and info.delivered.consumer_seq == 2
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


async def test_server_sigterm_finishes_in_flight_work_and_exits_0(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "processor.log"
    proc = await _start_server(harness, harness.storage, log)
    try:
        task = await harness.publish_task(slow_png(), params=SLOW)
        await harness.wait_for(lambda: harness.events_of(task.task_id), 30)
        proc.send_signal(signal.SIGTERM)
        assert await _wait_exit(proc, 40) == 0, log.read_text()[-3000:]
        assert harness.events_of(task.task_id)[-1].status == SUCCESS
        await _settled(harness)
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        mine = [r for r in lines if r.get("task_id") == task.task_id]
        assert mine and all(r["service"] == "processor" and r["job_id"] == task.job_id for r in mine)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


async def test_background_loops_end_on_the_stop_flag_even_without_a_cancel(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python 3.11 asyncio.wait_for (inside every NATS request) loses a cancellation that
    arrives together with the reply; drain() must not hang on a loop that lost it. Here the
    loops get no cancel at all: the stop flag alone ends them."""
    monkeypatch.setattr(worker_module, "CONSUMER_CHECK_INTERVAL", 0.1)
    worker = await harness.worker(queue_depth_interval=0.1)
    loops = list(worker._background)
    assert len(loops) == 2 and not any(t.done() for t in loops)
    worker._stopping = True  # what drain() sets first
    done, pending = await asyncio.wait(loops, timeout=3)
    assert not pending, [t.get_name() for t in pending]
    worker._stopping = False  # let the fixture's drain() run as usual
    await worker.drain()
