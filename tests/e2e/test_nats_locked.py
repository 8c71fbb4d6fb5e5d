"""`make run`'s NATS is locked down: the launcher generated per-service credentials (private files,
kept across restarts) and the server refuses anyone without them, while jobs still run."""

from __future__ import annotations

import asyncio
import json
import stat
from typing import Any

import nats
import nats.errors
import pytest

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
        await asyncio.sleep(0.3)
        await nc.close()
        return violations

    violations = asyncio.run(probe())
    assert any('subscription to "radiology.>"' in v.lower() for v in violations), violations

    with client(platform) as c:
        r = submit(c, [("a.png", png_bytes())])
        assert r.status_code == 202, r.text
        assert wait_job(c, r.json()["job_id"])["status"] == "SUCCESS"
