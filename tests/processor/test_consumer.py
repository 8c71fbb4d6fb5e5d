"""The shared durable consumer: defined by the jobs service (messaging.ensure_task_consumer) with the
configured ack_wait / max_deliver; processors wait for it and never create it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.js import JetStreamContext

from services.common import messaging
from services.processor.worker import subscribe
from tests.conftest import NatsServer


@pytest.fixture
async def js(tmp_path) -> AsyncIterator[JetStreamContext]:
    """A fresh nats-server with the platform's streams, and a JetStream context on it."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        nc = await messaging.connect(server.url, "consumer-test")
        context = nc.jetstream()
        await messaging.ensure_streams(context)
        yield context
        await nc.close()
    finally:
        server.stop()


async def test_the_jobs_service_creates_and_updates_the_durable(js: JetStreamContext) -> None:
    await messaging.ensure_task_consumer(js, ack_wait=30, max_deliver=5)
    await messaging.ensure_task_consumer(js, ack_wait=4, max_deliver=3)
    info = await js.consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
    assert info.config.ack_wait == 4 and info.config.max_deliver == 3
    assert info.config.filter_subject == f"{messaging.TASKS_SUBJECT}.>"


async def test_a_durable_made_by_older_processors_is_kept_with_its_messages(js: JetStreamContext) -> None:
    """Upgrade: processors used to create the durable with this same configuration; the jobs
    service's create is then a no-op, and tasks queued or held keep their state."""
    # What services/processor/worker.subscribe did before the jobs service owned the durable.
    old = messaging.consumer_config(messaging.PROCESSOR_DURABLE, messaging.TASKS_SUBJECT,
                                    ack_wait=30.0, max_deliver=-1)
    await js.add_consumer(messaging.TASKS_STREAM, old)
    for i in range(3):
        await js.publish(messaging.task_subject("blur", "job", f"t{i}"), b"task")
    sub = await js.pull_subscribe_bind(durable=messaging.PROCESSOR_DURABLE, stream=messaging.TASKS_STREAM)
    (held,) = await sub.fetch(1, timeout=5)
    before = await js.consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)

    await messaging.ensure_task_consumer(js, ack_wait=30.0, max_deliver=-1)
    after = await js.consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
    assert after.config == before.config
    assert messaging.task_consumer_config(ack_wait=30.0, max_deliver=-1) == old
    assert (after.created, after.num_pending, after.num_ack_pending) == (before.created, 2, 1)
    await held.ack()
    assert len(await sub.fetch(2, timeout=5)) == 2


async def test_a_processor_waits_for_the_durable(js: JetStreamContext) -> None:
    waiting = asyncio.create_task(subscribe(js))
    await asyncio.sleep(1.5)
    assert not waiting.done()
    assert not await messaging.consumer_exists(js, messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
    await messaging.ensure_task_consumer(js, ack_wait=30, max_deliver=-1)
    sub = await asyncio.wait_for(waiting, 5)
    await js.publish(messaging.task_subject("blur", "job", "t"), b"task")
    (msg,) = await sub.fetch(1, timeout=5)
    assert msg.data == b"task"
