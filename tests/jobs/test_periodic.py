"""The background loop of the outbox and the janitor."""

from __future__ import annotations

import asyncio

from services.jobs.periodic import Periodic


async def test_runs_at_once_only_when_asked_then_every_interval_and_survives_a_failure() -> None:
    calls: dict[str, int] = {"now": 0, "later": 0}

    def step(name: str):  # noqa: ANN202
        async def run() -> None:
            calls[name] += 1
            if calls[name] == 2:
                raise RuntimeError("database away")  # logged; the next pass tries again

        return run

    now = Periodic("now", step("now"), 0.2, at_start=True)
    later = Periodic("later", step("later"), 0.2, at_start=False)
    now.start()
    later.start()
    await asyncio.sleep(0.05)
    assert calls == {"now": 1, "later": 0}

    async def both_past_their_failure() -> None:
        while calls["now"] < 3 or calls["later"] < 3:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(both_past_their_failure(), 10)
    await asyncio.gather(now.stop(), later.stop())
    done = dict(calls)
    await asyncio.sleep(0.3)
    assert calls == done  # stopped


async def test_stop_lets_the_pass_in_progress_finish() -> None:
    started, finished = asyncio.Event(), []

    async def slow() -> None:
        started.set()
        await asyncio.sleep(0.2)
        finished.append(True)

    loop = Periodic("slow", slow, 60, at_start=True)
    loop.start()
    await started.wait()
    await loop.stop()
    assert finished == [True]
