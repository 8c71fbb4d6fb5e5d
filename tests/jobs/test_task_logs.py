"""The jobs service stores a task's log lines from its terminal event, cleaned, on SQLite and
PostgreSQL, and returns them with the task."""

from __future__ import annotations

from services.common.tasklogs import MAX_LOG_LINES
from services.jobs.convert import task_to_proto
from services.jobs.repository import Repository

from .test_repository import FAILED, RUNNING, SUCCESS, create, ev, result_for


async def test_terminal_events_store_cleaned_log_lines(repo: Repository) -> None:
    job = await create(repo, "alice", "one.png", "two.png")
    ok, bad = job.tasks
    lines = ["download: 0.010 s (4.3 KiB)", "cannot read /srv/var/tmp/task-1/in.png\x07 here",
             *(f"line {i}" for i in range(80))]
    await repo.apply_events([
        ev(ok, RUNNING, 10, "fetched", logs=["ignored: not a terminal event"]),
        ev(ok, SUCCESS, 100, "stored", result=result_for(ok), logs=lines),
        ev(bad, FAILED, 100, "failed", error="broken", logs=["decode: 0.002 s", "processing stopped"]),
    ])
    stored = await repo.get_task("alice", ok.task_id)
    assert stored is not None and stored.logs is not None
    assert stored.logs[:2] == ["download: 0.010 s (4.3 KiB)", "cannot read in.png here"]
    assert len(stored.logs) == MAX_LOG_LINES and stored.logs[-1].endswith("more lines left out)")
    assert list(task_to_proto(stored).logs) == stored.logs
    failed = await repo.get_task("alice", bad.task_id)
    assert failed is not None and failed.logs == ["decode: 0.002 s", "processing stopped"]
    # A late duplicate with other lines changes nothing: the task is finished.
    await repo.apply_events([ev(bad, FAILED, 100, "again", error="x", logs=["other"])])
    again = await repo.get_task("alice", bad.task_id)
    assert again is not None and again.logs == failed.logs


async def test_a_task_without_an_outcome_has_no_log_lines(repo: Repository) -> None:
    job = await create(repo, "alice", "one.png")
    task = await repo.get_task("alice", job.tasks[0].task_id)
    assert task is not None and task.logs is None and list(task_to_proto(task).logs) == []
