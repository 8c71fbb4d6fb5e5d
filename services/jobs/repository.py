"""All SQL of the jobs service.

Concurrency: every write that reads first locks the job row (SELECT ... FOR UPDATE on PostgreSQL,
always in job_id order so replicas never deadlock) and then reads its tasks, so cancel and event
batches never overwrite each other's terminal states. SQLite has no row locks and runs one jobs
process, so its writes are serialised in-process (the one database thread, or an asyncio lock).

The hot paths (event batches, GetJob/WatchJob reads) use Core statements built once and plain
JobState/TaskState objects: the ORM's identity map, attribute events and flush cost more CPU
than the SQL itself for these one-row-per-job reads and few-column updates.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Table, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from services.common.gen.radiology.v1 import tasks_pb2
from services.common.keys import choose_output_stems, parse_key
from services.jobs import rules
from services.jobs.models import (
    PENDING,
    TERMINAL,
    JobRow,
    JobState,
    TaskRow,
    TaskState,
    make_sync_sqlite_engine,
    utcnow,
)

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class JobExistsError(Exception):
    """A job with this id already exists (for another user, or for this user: see .job)."""

    def __init__(self, job: JobRow | JobState | None) -> None:
        super().__init__("job id already in use")
        self.job = job


class InvalidCursorError(ValueError):
    pass


@dataclass(frozen=True)
class NewInput:
    filename: str
    key: str
    format: str = ""
    size: int = 0


@dataclass
class ApplyResult:
    applied: int = 0
    job_ids: set[str] = field(default_factory=set)
    # The changed jobs as committed, tasks loaded (for WatchJob snapshots).
    jobs: list[JobState] = field(default_factory=list)
    # Output keys reported for jobs that no longer exist (deleted while a processor stored them).
    orphan_keys: list[str] = field(default_factory=list)


# --- Core statements of the hot paths (built once: no per-call construction or cache-key work) ---

_JOBS: Table = JobRow.__table__  # type: ignore[assignment]
_TASKS: Table = TaskRow.__table__  # type: ignore[assignment]
_JOB_COLS = tuple(c.key for c in _JOBS.c)
_TASK_COLS = tuple(c.key for c in _TASKS.c)
# A job and its tasks in one round trip: one row per task (task columns labelled t_<name>).
_LOAD_JOBS = (
    select(*_JOBS.c, *(c.label(f"t_{c.key}") for c in _TASKS.c))
    .select_from(_JOBS.outerjoin(_TASKS, _TASKS.c.job_id == _JOBS.c.job_id))
    .where(_JOBS.c.job_id.in_(bindparam("job_ids", expanding=True)))
    .order_by(_JOBS.c.job_id, _TASKS.c.position)
)
# Locks the job rows, in job_id order. A statement of its own: in READ COMMITTED, a locking
# SELECT that had to wait re-reads only the locked rows, so tasks joined in it could be stale.
_LOCK_JOBS = (
    select(_JOBS.c.job_id)
    .where(_JOBS.c.job_id.in_(bindparam("job_ids", expanding=True)))
    .order_by(_JOBS.c.job_id)
    .with_for_update()
)
_JOB_IDS_OF_TASKS = select(_TASKS.c.job_id).where(_TASKS.c.task_id.in_(bindparam("task_ids", expanding=True)))
# What rules.apply_event / rules.derive_job may change; executemany fills the SET from these keys.
_TASK_CHANGED = (
    "status", "progress", "message", "started_at", "finished_at", "error", "result", "updated_at",
)
_JOB_CHANGED = ("status", "progress", "message", "updated_at")
_INSERT_JOB = insert(_JOBS)
_INSERT_TASK = insert(_TASKS)
_UPDATE_TASK = update(_TASKS).where(_TASKS.c.task_id == bindparam("b_task_id"))
_MARK_PUBLISHED = (
    update(_TASKS)
    .where(_TASKS.c.task_id.in_(bindparam("task_ids", expanding=True)))
    .values(published=True, published_at=bindparam("at"))
)
_UPDATE_JOB = update(_JOBS).where(_JOBS.c.job_id == bindparam("b_job_id"))


def _load_jobs(conn: Connection, job_ids: Sequence[str], *, lock: bool) -> list[JobState]:
    """The jobs (with their tasks, by position) of these ids that exist, in job_id order."""
    params = {"job_ids": sorted(set(job_ids))}
    if lock:
        conn.execute(_LOCK_JOBS, params)
    rows = conn.execute(_LOAD_JOBS, params).all()
    jobs: list[JobState] = []
    n = len(_JOB_COLS)
    current: JobState | None = None
    for row in rows:
        values = tuple(row)
        if current is None or current.job_id != values[0]:
            current = JobState(dict(zip(_JOB_COLS, values[:n], strict=True)), [])
            jobs.append(current)
        if values[n] is not None:  # a job without tasks has one row of NULL task columns
            current.tasks.append(TaskState(dict(zip(_TASK_COLS, values[n:], strict=True))))
    return jobs


def encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        return datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError) as exc:
        raise InvalidCursorError("invalid cursor") from exc


class Repository:
    """Each operation is one plain function over a sync Session, run in one of two ways:

    * SQLite file: on a sync (pysqlite) engine in the one database thread, a single thread hop for
      the whole transaction; the thread also serialises the writes of this (only) jobs process.
      Through aiosqlite every cursor call would be its own hop: about 3x the CPU per operation.
    * PostgreSQL (or in-memory SQLite): AsyncSession.run_sync on the async engine.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._sqlite_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        # SQLite has no row locks (its writes are serialised in-process); PostgreSQL locks rows.
        self._lock_rows = engine.dialect.name != "sqlite"
        self._sync: sessionmaker[Session] | None = None
        self._sync_engine: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        url = engine.url
        if engine.dialect.name == "sqlite" and url.database and url.database != ":memory:":
            self._sync_engine = make_sync_sqlite_engine(url.set(drivername="sqlite+pysqlite"))
            self._sync = sessionmaker(self._sync_engine, expire_on_commit=False)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs-db")

    async def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()

    def _in_sync_session(self, fn: Callable[[Session], T], write: bool) -> T:
        assert self._sync is not None
        with self._sync() as session:
            if not write:
                return fn(session)
            with session.begin():
                return fn(session)

    async def _run(self, fn: Callable[[Session], T], *, write: bool = False) -> T:
        """Run fn(session) in one transaction (committed when `write`, else rolled back)."""
        if self._thread is not None:
            return await asyncio.get_running_loop().run_in_executor(
                self._thread, self._in_sync_session, fn, write
            )
        if not write:
            async with self.sessions() as session:
                return await session.run_sync(fn)
        async with self._sqlite_lock or nullcontext(), self.sessions() as session, session.begin():
            return await session.run_sync(fn)

    @staticmethod
    def _lock_jobs(session: Session, job_ids: Sequence[str]) -> list[JobRow]:
        stmt = (
            select(JobRow)
            .where(JobRow.job_id.in_(sorted(set(job_ids))))
            .order_by(JobRow.job_id)
            .with_for_update()
        )
        return list(session.scalars(stmt).all())

    # --- jobs ---

    async def create_job(
        self,
        *,
        job_id: str,
        user_id: str,
        task_type: str,
        params: dict[str, Any],
        inputs: Sequence[NewInput],
    ) -> JobState:
        """Insert the job and its tasks (unpublished) in one transaction."""
        now = utcnow()
        stems = choose_output_stems([i.filename for i in inputs])
        job = JobState({
            "job_id": job_id, "user_id": user_id, "status": PENDING, "progress": 0,
            "message": f"0 of {len(inputs)} {'task' if len(inputs) == 1 else 'tasks'} done",
            "task_type": task_type, "params": params, "created_at": now, "updated_at": now,
        }, [
            TaskState({
                "task_id": str(uuid.uuid4()), "job_id": job_id, "user_id": user_id, "position": i,
                "status": PENDING, "progress": 0, "message": "queued", "input_file": inp.filename,
                "input_key": inp.key, "input_format": inp.format, "size": inp.size, "output_stem": stem,
                "error": "", "result": None, "published": False, "published_at": None,
                "started_at": None, "finished_at": None, "updated_at": now,
            })
            for i, (inp, stem) in enumerate(zip(inputs, stems, strict=True))
        ])

        def insert_rows(session: Session) -> None:
            conn = session.connection()
            conn.execute(_INSERT_JOB, {k: getattr(job, k) for k in _JOB_COLS})
            conn.execute(_INSERT_TASK, [{k: getattr(t, k) for k in _TASK_COLS} for t in job.tasks])

        try:
            await self._run(insert_rows, write=True)
        except IntegrityError:
            found = await self._run(lambda session: _load_jobs(session.connection(), [job_id], lock=False))
            raise JobExistsError(found[0] if found else None) from None
        return job

    async def get_job(self, user_id: str, job_id: str) -> JobState | None:
        jobs = await self._run(lambda session: _load_jobs(session.connection(), [job_id], lock=False))
        return jobs[0] if jobs and jobs[0].user_id == user_id else None

    async def list_jobs(
        self, user_id: str, *, status: str | None = None, limit: int = DEFAULT_LIMIT, cursor: str = ""
    ) -> tuple[list[JobRow], str]:
        """The user's jobs, newest first; returns (jobs, next_cursor or "")."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        stmt = select(JobRow).where(JobRow.user_id == user_id)
        if status:
            stmt = stmt.where(JobRow.status == status)
        if cursor:
            created, last_id = decode_cursor(cursor)
            stmt = stmt.where(
                or_(JobRow.created_at < created, and_(JobRow.created_at == created, JobRow.job_id < last_id))
            )
        stmt = stmt.order_by(JobRow.created_at.desc(), JobRow.job_id.desc()).limit(limit + 1)
        jobs = await self._run(lambda session: list(session.scalars(stmt).all()))
        if len(jobs) <= limit:
            return jobs, ""
        jobs = jobs[:limit]
        return jobs, encode_cursor(jobs[-1].created_at, jobs[-1].job_id)

    async def cancel_job(self, user_id: str, job_id: str) -> tuple[JobRow | None, bool]:
        """Cancel the job's unfinished tasks; returns (job or None if not found, changed)."""
        now = utcnow()

        def cancel(session: Session) -> tuple[JobRow | None, bool]:
            jobs = self._lock_jobs(session, [job_id])
            if not jobs or jobs[0].user_id != user_id:
                return None, False
            job = jobs[0]
            changed = False
            for task in job.tasks:
                changed |= rules.cancel_task(task, now)
            if changed:
                rules.derive_job(job, job.tasks, now)
                job.updated_at = now
            return job, changed

        return await self._run(cancel, write=True)

    async def delete_job(self, user_id: str, job_id: str) -> bool:
        stmt = delete(JobRow).where(JobRow.job_id == job_id, JobRow.user_id == user_id)
        result = await self._run(lambda session: session.execute(stmt), write=True)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # --- tasks ---

    async def get_task(self, user_id: str, task_id: str) -> TaskRow | None:
        task = await self._run(lambda session: session.get(TaskRow, task_id))
        return task if task is not None and task.user_id == user_id else None

    async def unpublished_tasks(
        self, *, older_than: float = 1.0, limit: int = 500
    ) -> list[tuple[JobRow, TaskRow]]:
        """Pending tasks never marked published, created more than `older_than` seconds ago."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        stmt = (
            select(TaskRow, JobRow)
            .join(JobRow, TaskRow.job_id == JobRow.job_id)
            .where(TaskRow.published.is_(False), TaskRow.status == PENDING, JobRow.created_at <= cutoff)
            .order_by(JobRow.created_at, TaskRow.position)
            .limit(limit)
        )
        rows = await self._run(lambda session: session.execute(stmt).all())
        return [(job, task) for task, job in rows]

    async def existing_jobs(self, job_ids: Sequence[str]) -> set[tuple[str, str]]:
        """(user_id, job_id) of those of job_ids that exist."""
        ids = sorted(set(job_ids))
        found: set[tuple[str, str]] = set()
        for start in range(0, len(ids), 500):  # well under every database's parameter limit
            stmt = select(JobRow.user_id, JobRow.job_id).where(JobRow.job_id.in_(ids[start : start + 500]))
            rows = await self._run(lambda session, stmt=stmt: session.execute(stmt).all())
            found.update((user_id, job_id) for user_id, job_id in rows)
        return found

    async def ping(self) -> None:
        """A trivial query: raises while the database cannot be reached."""
        await self._run(lambda session: session.execute(select(1)))

    async def count_unpublished(self) -> int:
        stmt = select(func.count()).select_from(TaskRow).where(
            TaskRow.published.is_(False), TaskRow.status == PENDING
        )
        return int(await self._run(lambda session: session.scalar(stmt)) or 0)

    async def mark_published(self, task_ids: Sequence[str]) -> None:
        if not task_ids:
            return
        params = {"task_ids": list(task_ids), "at": utcnow()}
        await self._run(lambda session: session.connection().execute(_MARK_PUBLISHED, params), write=True)

    # --- events ---

    async def apply_events(self, events: Sequence[tasks_pb2.TaskEvent]) -> ApplyResult:
        """Apply a batch of TaskEvents in one transaction (rules.apply_event) and recompute the
        touched jobs. Unknown tasks and terminal tasks are left alone."""
        if not any(e.task_id for e in events):
            return ApplyResult()
        now = utcnow()
        # Events name their job; only an event without one costs a lookup. A wrong job_id finds
        # no task of that id in the job (or is refused by rules.apply_event): nothing changes.
        named = {e.job_id for e in events if e.task_id and e.job_id}
        unnamed = list({e.task_id for e in events if e.task_id and not e.job_id})

        def apply(session: Session) -> ApplyResult:
            result = ApplyResult()
            conn = session.connection()
            job_ids = set(named)
            if unnamed:
                job_ids.update(conn.execute(_JOB_IDS_OF_TASKS, {"task_ids": unnamed}).scalars())
            jobs = _load_jobs(conn, list(job_ids), lock=self._lock_rows) if job_ids else []
            tasks = {t.task_id: t for job in jobs for t in job.tasks}
            existing = {job.job_id for job in jobs}
            result.orphan_keys = [
                o.key for e in events if e.job_id and e.job_id not in existing
                for o in e.result.outputs if _in_job_folder(o.key, e.job_id)
            ]
            changed: dict[str, TaskState] = {}
            for event in events:
                task = tasks.get(event.task_id)
                if task is not None and rules.apply_event(task, event, now):
                    result.applied += 1
                    result.job_ids.add(task.job_id)
                    changed[task.task_id] = task
            if not changed:
                return result
            for job in jobs:
                if job.job_id in result.job_ids:
                    rules.derive_job(job, job.tasks, now)
                    job.updated_at = now
                    result.jobs.append(job)
            # One executemany per table: only the columns the rules may have changed.
            conn.execute(_UPDATE_TASK, [
                {"b_task_id": t.task_id, **{k: getattr(t, k) for k in _TASK_CHANGED}}
                for t in changed.values()
            ])
            conn.execute(_UPDATE_JOB, [
                {"b_job_id": j.job_id, **{k: getattr(j, k) for k in _JOB_CHANGED}} for j in result.jobs
            ])
            return result

        return await self._run(apply, write=True)


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def _in_job_folder(key: str, job_id: str) -> bool:
    try:
        return parse_key(key).job_id == job_id
    except ValueError:
        return False
