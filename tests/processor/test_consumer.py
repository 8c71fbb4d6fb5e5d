"""The shared durable consumer follows the configured ack_wait / max_deliver."""

from __future__ import annotations

from services.common import messaging
from services.common.config import Settings
from services.processor.worker import subscribe
from tests.conftest import NatsServer


async def test_subscribe_updates_an_existing_durable(tmp_path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        nc = await messaging.connect(server.url, "consumer-test")
        js = nc.jetstream()
        await messaging.ensure_streams(js)
        await subscribe(js, Settings(ack_wait_seconds=30, max_deliver=5))
        await subscribe(js, Settings(ack_wait_seconds=4, max_deliver=3))
        info = await js.consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)
        assert info.config.ack_wait == 4 and info.config.max_deliver == 3
        await nc.close()
    finally:
        server.stop()
