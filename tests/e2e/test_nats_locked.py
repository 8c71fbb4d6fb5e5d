"""`make run`'s NATS is locked down: the launcher generated per-service credentials (private files,
kept across restarts) and the server refuses anyone without them, and a process with a processor's
credentials can neither listen to everything nor redefine the processors' shared durable consumer
(a filter matching nothing would leave every queued job unfinished), while jobs still run."""

from __future__ import annotations

import asyncio
import json
import stat
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest

from services.common import messaging
from tests.e2e.conftest import client, png_bytes, submit, wait_job

pytestmark = pytest.mark.slow


def test_nats_refuses_strangers_and_jobs_still_run(platform: Any) -> None:
    auth = platform.data_dir / "nats-auth"
    for name in ("credentials.json", "nats-server.conf"):
        assert stat.S_IMODE((auth / name).stat().st_mode) == 0o600
    passwords = json.loads((auth / "credentials.json").read_text())

    async def probe() -> list[str]:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(platform.nats_url, allow_reconnect=False, max_reconnect_attempts=0,
                               connect_timeout=2)
        violations: list[str] = []

        async def on_error(exc: Exception) -> None:
            violations.append(str(exc))

        nc = await nats.connect(platform.nats_url, user="processor", password=passwords["processor"],
                                inbox_prefix="_INBOX_processor", error_cb=on_error)
        await nc.subscribe("radiology.>")
        await nc.flush()
        # Starve the processors: their durable filtering on nothing, giving up after one delivery;
        # or no durable at all. Each form of the consumer API is refused.
        js = nc.jetstream(timeout=2)
        durable, nothing = messaging.PROCESSOR_DURABLE, f"{messaging.TASKS_SUBJECT}.nothing.>"
        for attack in (
            lambda: js.add_consumer(messaging.TASKS_STREAM, name=durable, durable_name=durable,
                                    filter_subject=nothing, max_deliver=1),
            lambda: js.add_consumer(messaging.TASKS_STREAM, durable_name=durable,
                                    filter_subject=nothing, max_deliver=1),
            lambda: js.delete_consumer(messaging.TASKS_STREAM, durable),
        ):
            with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
                await attack()
        await asyncio.sleep(0.3)
        # What it may do: read the durable's info (to wait for it); the jobs service made it.
        info = await js.consumer_info(messaging.TASKS_STREAM, durable)
        await nc.close()
        assert (info.config.filter_subject, info.config.max_deliver) == (f"{messaging.TASKS_SUBJECT}.>", -1)
        return violations

    violations = asyncio.run(probe())
    assert any('subscription to "radiology.>"' in v.lower() for v in violations), violations
    for subject in (f"consumer.create.{messaging.TASKS_STREAM}.{messaging.PROCESSOR_DURABLE}",
                    f"consumer.durable.create.{messaging.TASKS_STREAM}.{messaging.PROCESSOR_DURABLE}",
                    f"consumer.delete.{messaging.TASKS_STREAM}.{messaging.PROCESSOR_DURABLE}"):
        assert any(subject.lower() in v.lower() for v in violations), (subject, violations)

    with client(platform) as c:
        r = submit(c, [("a.png", png_bytes())])
        assert r.status_code == 202, r.text
        assert wait_job(c, r.json()["job_id"])["status"] == "SUCCESS"
