"""Live updates on a platform of our own, whose jobs service is stopped and started: the job
detail and its row say that live updates are interrupted, the list retries and keeps the #job/
address across a reload, and everything recovers by itself. Screenshots: test-output/web/."""

from __future__ import annotations

import json
import os
import re
import signal

import httpx
import pytest

from .conftest import VIEWPORT, new_user, sign_in
from .test_ui import JOB_TIMEOUT

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def own_platform(tmp_path):
    from tests.conftest import start_platform

    p = start_platform(tmp_path / "platform")
    yield p
    p.stop()


def freeze(plat, on: bool) -> None:
    """SIGSTOP / SIGCONT the processor and its workers (its own process group)."""
    proc = plat.procs.get("processor")
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGSTOP if on else signal.SIGCONT)


def test_live_updates_interrupted_then_recover(browser, own_platform, anatomical_nii, shots):
    plat = own_platform
    context = browser.new_context(viewport=VIEWPORT, base_url=plat.base_url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(30_000)
    try:
        user = new_user("live")
        sign_in(page, user)
        page.get_by_label("Operation").locator("option").first.wait_for(state="attached")
        # A job of many slow tasks, then the processor frozen (SIGSTOP) at once: the job stays
        # unfinished, so the page keeps following it.
        vol = anatomical_nii.read_bytes()
        r = httpx.post(
            plat.base_url + "/jobs",
            headers={"X-User-ID": user},
            files=[("files", (f"v{i}.nii", vol, "application/octet-stream")) for i in range(10)],
            data={"task_type": "blur", "params": json.dumps({"sigma": 8})},
            timeout=60,
        )
        freeze(plat, True)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        page.goto(f"/#job/{job_id}")
        unfinished = ':is([data-status="PENDING"], [data-status="RUNNING"])'
        page.locator(f'.job-detail[data-job-id="{job_id}"]{unfinished}').wait_for()

        plat.stop_service("jobs")
        live = page.locator(".job-detail .live-status")
        live.wait_for(state="visible", timeout=40_000)
        assert live.inner_text() == "Live updates interrupted — retrying…"
        row = page.locator(f'.job-list li[data-job-id="{job_id}"]')
        assert row.get_attribute("data-live") == "interrupted"
        assert "interrupted" in row.inner_text()
        page.screenshot(path=str(shots / "live-interrupted.png"))
        # It recovers by itself once the service is back.
        plat.start_service("jobs")
        live.wait_for(state="hidden", timeout=60_000)
        assert row.get_attribute("data-live") is None

        plat.stop_service("jobs")
        live.wait_for(state="visible", timeout=40_000)
        # A reload while the jobs service is down: the list says so and retries; the address
        # keeps the selected job.
        page.reload()
        page.get_by_text(re.compile(r"Jobs could not be loaded: 503.*retrying")).wait_for()
        assert f"#job/{job_id}" in page.url
        page.screenshot(path=str(shots / "list-retrying.png"))

        plat.start_service("jobs")
        page.locator(f'.job-detail[data-job-id="{job_id}"]').wait_for(timeout=60_000)
        assert f"#job/{job_id}" in page.url
        freeze(plat, False)
        page.locator(f'.job-detail[data-job-id="{job_id}"][data-status="SUCCESS"]').wait_for(
            timeout=JOB_TIMEOUT
        )
        assert page.locator(".job-detail .live-status").is_hidden()
        assert page.locator(f'.job-list li[data-job-id="{job_id}"]').get_attribute("data-live") is None
    finally:
        freeze(plat, False)
        context.close()
    assert not errors, errors
