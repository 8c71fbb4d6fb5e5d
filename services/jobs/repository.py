"""All SQL of the jobs service: SQLAlchemy Core statements on the tables of models.py, returning
the one model of a job and a task (models.JobState, models.TaskState).

Concurrency: every write that reads first locks the job rows (_LOCK_JOBS: SELECT ... FOR UPDATE on
PostgreSQL, always in job_id order so replicas never deadlock) and then reads them with their
tasks, so cancel and event batches never overwrite each other's terminal states. SQLite has no row
locks and runs one jobs process, so its writes are serialised in-process (the one database thread,
or an asyncio lock).

The statements of the hot paths (event batches, GetJob/WatchJob reads) are built once at import:
no per-call construction or cache-key work.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.gen.radiology.v1 import tasks_pb2
from services.common.keys import parse_key
from services.common.status import PENDING, RUNNING, TERMINAL_NAMES
from services.jobs import limits as user_limits
from services.jobs import rules
from services.jobs.limits import Usage, UserLimits
from services.jobs.models import (
    JOB_COLUMNS,
    TASK_COLUMNS,
    JobState,
    NewInput,
    TaskState,
    job_keys,
    jobs,
    make_sync_sqlite_engine,
    tasks,
    users,
    utcnow,
)

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Ids per IN list: well under every database's parameter limit.
_IDS_PER_QUERY = 500


class JobExistsError(Exception):
    """A job with this id already exists (for another user, or for this user: see .job)."""

    def __init__(self, job: JobState | None) -> None:
        super().__init__("job id already in use")
        self.job = job


class InvalidCursorError(ValueError):
    pass


@dataclass
class ApplyResult:
    applied: int = 0
    job_ids: set[str] = field(default_factory=set)
    # The changed jobs as committed, tasks loaded (for WatchJob snapshots).
    jobs: list[JobState] = field(default_factory=list)
    # Output keys reported for jobs that no longer exist (deleted while a processor stored them).
    orphan_keys: list[str] = field(default_factory=list)
    finished: int = 0  # tasks that became terminal (each frees a dispatch slot of its user)


# --- statements ---

_JOB_IDS = bindparam("job_ids", expanding=True)
_TASK_IDS = bindparam("task_ids", expanding=True)
# A job and its tasks in one round trip: one row per task (NULL task columns for a job without).
_LOAD_JOBS = (
    select(*jobs.c, *(c.label(f"t_{c.key}") for c in tasks.c))
    .select_from(jobs.outerjoin(tasks, tasks.c.job_id == jobs.c.job_id))
    .where(jobs.c.job_id.in_(_JOB_IDS))
    .order_by(jobs.c.job_id, tasks.c.position)
)
# Locks the job rows, in job_id order. A statement of its own: in READ COMMITTED, a locking
# SELECT that had to wait re-reads only the locked rows, so tasks joined in it could be stale.
_LOCK_JOBS = (
    select(jobs.c.job_id).where(jobs.c.job_id.in_(_JOB_IDS)).order_by(jobs.c.job_id).with_for_update()
)
_LOAD_TASK = select(*tasks.c).where(tasks.c.task_id == bindparam("task_id"))
_JOB_IDS_OF_TASKS = select(tasks.c.job_id).where(tasks.c.task_id.in_(_TASK_IDS))
_EXISTING_JOBS = select(jobs.c.user_id, jobs.c.job_id).where(jobs.c.job_id.in_(_JOB_IDS))
_UNPUBLISHED = and_(tasks.c.published.is_(False), tasks.c.status == PENDING)
_COUNT_UNPUBLISHED = select(func.count()).select_from(tasks).where(_UNPUBLISHED)
_INSERT_JOB = insert(jobs)
_INSERT_TASK = insert(tasks)
_DELETE_JOB = delete(jobs).where(jobs.c.job_id == bindparam("job_id"), jobs.c.user_id == bindparam("user_id"))
_MARK_PUBLISHED = (
    update(tasks).where(tasks.c.task_id.in_(_TASK_IDS)).values(
        published=True, published_at=bindparam("at"),
        dispatched_at=func.coalesce(tasks.c.dispatched_at, bindparam("at")),
    )
)
# What the rules (apply_event, cancel_task, derive_job) may change; executemany fills the SET
# from these keys.
_TASK_CHANGED = (
    "status", "progress", "message", "started_at", "finished_at", "error", "result", "updated_at",
    "output_bytes", "logs",
)
_JOB_CHANGED = ("status", "progress", "message", "updated_at")
_UPDATE_TASK = update(tasks).where(tasks.c.task_id == bindparam("b_task_id"))
_UPDATE_JOB = update(jobs).where(jobs.c.job_id == bindparam("b_job_id"))


# Retention: a finished job's updated_at is when it finished (nothing changes it afterwards).
_EXPIRED_JOBS = (
    select(jobs.c.user_id, jobs.c.job_id)
    .where(jobs.c.status.in_(sorted(TERMINAL_NAMES)), jobs.c.updated_at < bindparam("before"))
    .order_by(jobs.c.updated_at)
    .limit(bindparam("limit"))
)

# Per-user limits.
_JOB_EXISTS = select(jobs.c.job_id).where(jobs.c.job_id == bindparam("job_id"))
_INSERT_KEY = insert(job_keys)
_JOB_OF_KEY = select(job_keys.c.job_id).where(
    job_keys.c.user_id == bindparam("user_id"), job_keys.c.idempotency_key == bindparam("key")
)
_LOAD_USER = select(users.c.tokens, users.c.tokens_at).where(users.c.user_id == bindparam("user_id"))
_LOCK_USER = _LOAD_USER.with_for_update()
_TAKE_TOKEN = (
    update(users).where(users.c.user_id == bindparam("b_user_id"))
    .values(tokens=bindparam("tokens"), tokens_at=bindparam("at"))
)
_ACTIVE_JOBS = select(func.count()).select_from(jobs).where(
    jobs.c.user_id == bindparam("user_id"), jobs.c.status.in_((PENDING, RUNNING))
)
_STORED_BYTES = select(func.coalesce(func.sum(tasks.c.size + tasks.c.output_bytes), 0)).where(
    tasks.c.user_id == bindparam("user_id")
)

# Fair dispatch. In flight: running, or pending and published (or claimed within the lease).
_FRESH_CLAIM = tasks.c.claimed_at >= bindparam("fresh")
_IN_FLIGHT = (
    select(tasks.c.user_id, func.count())
    .where(or_(
        tasks.c.status == RUNNING,
        and_(tasks.c.status == PENDING, or_(tasks.c.published.is_(True), _FRESH_CLAIM)),
    ))
    .group_by(tasks.c.user_id)
)
_RANK = func.row_number().over(
    partition_by=tasks.c.user_id, order_by=(jobs.c.created_at, tasks.c.job_id, tasks.c.position)
)
_WAITING_RANKED = (
    select(tasks.c.task_id, tasks.c.job_id, tasks.c.user_id, _RANK.label("rank"),
           jobs.c.created_at.label("job_created_at"), tasks.c.position)
    .join(jobs, tasks.c.job_id == jobs.c.job_id)
    .where(_UNPUBLISHED, or_(tasks.c.claimed_at.is_(None), tasks.c.claimed_at < bindparam("fresh")))
    .subquery()
)
# Round-robin: every user's first task, then every user's second, ...; older jobs first.
_WAITING = (
    select(_WAITING_RANKED.c.task_id, _WAITING_RANKED.c.job_id, _WAITING_RANKED.c.user_id,
           _WAITING_RANKED.c.rank)
    .where(_WAITING_RANKED.c.rank <= bindparam("per_user"))
    .order_by(_WAITING_RANKED.c.rank, _WAITING_RANKED.c.job_created_at, _WAITING_RANKED.c.job_id,
              _WAITING_RANKED.c.position)
)
_CLAIM = update(tasks).where(tasks.c.task_id.in_(_TASK_IDS)).values(claimed_at=bindparam("at"))
_RELEASE = (
    update(tasks).where(tasks.c.task_id.in_(_TASK_IDS), tasks.c.published.is_(False)).values(claimed_at=None)
)
# The reconciler: published and unfinished tasks without an event (updated_at) or a publish since
# the cutoff, oldest first.
_STALLED = (
    select(tasks.c.task_id, tasks.c.job_id, tasks.c.updated_at)
    .where(
        or_(tasks.c.status == RUNNING, and_(tasks.c.status == PENDING, tasks.c.published.is_(True))),
        tasks.c.updated_at < bindparam("cutoff"),
        or_(tasks.c.published_at.is_(None), tasks.c.published_at < bindparam("cutoff")),
    )
    .order_by(tasks.c.updated_at, tasks.c.task_id)
    .limit(bindparam("limit"))
)
# The next page: after the last (updated_at, task_id) seen (keyset paging: the tasks a pass fails
# or republishes leave the set, so an offset would skip some).
_STALLED_AFTER = _STALLED.where(
    or_(tasks.c.updated_at > bindparam("after_at"),
        and_(tasks.c.updated_at == bindparam("after_at"), tasks.c.task_id > bindparam("after_id")))
)
# Any fixed number: the key of the advisory lock that serialises claims on PostgreSQL.
_DISPATCH_LOCK = text("SELECT pg_advisory_xact_lock(740011)")


def _load_jobs(conn: Connection, job_ids: Iterable[str], *, lock: bool) -> list[JobState]:
    """The jobs (with their tasks, by position) of these ids that exist, in job_id order."""
    params = {"job_ids": sorted(set(job_ids))}
    if not params["job_ids"]:
        return []
    if lock:
        conn.execute(_LOCK_JOBS, params)
    found: list[JobState] = []
    n = len(JOB_COLUMNS)
    current: JobState | None = None
    for row in conn.execute(_LOAD_JOBS, params):
        values = tuple(row)
        if current is None or current.job_id != values[0]:
            current = JobState(*values[:n])
            found.append(current)
        if values[n] is not None:  # a job without tasks has one row of NULL task columns
            current.tasks.append(TaskState(*values[n:]))
    return found


def _save(conn: Connection, changed_tasks: Iterable[TaskState], changed_jobs: Iterable[JobState]) -> None:
    """Write back what the rules changed: one executemany per table, only those columns."""
    task_rows = [{"b_task_id": t.task_id, **{k: getattr(t, k) for k in _TASK_CHANGED}} for t in changed_tasks]
    job_rows = [{"b_job_id": j.job_id, **{k: getattr(j, k) for k in _JOB_CHANGED}} for j in changed_jobs]
    if task_rows:
        conn.execute(_UPDATE_TASK, task_rows)
    if job_rows:
        conn.execute(_UPDATE_JOB, job_rows)


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
    """Each operation is one plain function over a sync Connection, run in one of two ways:

    * SQLite file: on a sync (pysqlite) engine in the one database thread, a single thread hop for
      the whole transaction; the thread also serialises the writes of this (only) jobs process.
      Through aiosqlite every cursor call would be its own hop: about 3x the CPU per operation.
    * PostgreSQL (or in-memory SQLite): AsyncConnection.run_sync on the async engine.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sqlite_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        # SQLite has no row locks (its writes are serialised in-process); PostgreSQL locks rows.
        self._lock_rows = engine.dialect.name != "sqlite"
        self._sync_engine: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        url = engine.url
        if engine.dialect.name == "sqlite" and url.database and url.database != ":memory:":
            self._sync_engine = make_sync_sqlite_engine(url.set(drivername="sqlite+pysqlite"))
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs-db")

    async def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()

    def _in_thread(self, fn: Callable[[Connection], T], write: bool) -> T:
        assert self._sync_engine is not None
        with (self._sync_engine.begin() if write else self._sync_engine.connect()) as conn:
            return fn(conn)

    async def _run(self, fn: Callable[[Connection], T], *, write: bool = False) -> T:
        """Run fn(connection) in one transaction (committed when `write`, else rolled back)."""
        if self._thread is not None:
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._in_thread, fn, write)
        if not write:
            async with self.engine.connect() as conn:
                return await conn.run_sync(fn)
        async with self._sqlite_lock or nullcontext(), self.engine.begin() as conn:
            return await conn.run_sync(fn)

    # --- jobs ---

    async def create_job(
        self,
        *,
        job_id: str,
        user_id: str,
        task_type: str,
        params: dict[str, Any],
        inputs: Sequence[NewInput],
        limits: UserLimits | None = None,
        idempotency_key: str = "",
    ) -> JobState:
        """Insert the job and its tasks (unpublished) in one transaction. With `limits`, the user's
        quotas are checked in that transaction, their row locked (limits.LimitExceededError). With
        an `idempotency_key` the user already used, nothing is inserted: JobExistsError carries the
        job of that key (the key's uniqueness decides between concurrent calls)."""
        job = rules.new_job(
            job_id=job_id, user_id=user_id, task_type=task_type, params=params, inputs=inputs, now=utcnow()
        )
        key_params = {"user_id": user_id, "key": idempotency_key}

        def insert_rows(conn: Connection) -> str | None:
            if idempotency_key and (owner := conn.execute(_JOB_OF_KEY, key_params).scalar()) is not None:
                return owner
            if limits is not None and conn.execute(_JOB_EXISTS, {"job_id": job_id}).first() is None:
                usage = self._user_usage(conn, user_id, limits, job.created_at)
                # A concurrent call with the same key may have committed while this one waited on
                # the user's row lock (PostgreSQL): it is a replay, not a new job to check.
                if idempotency_key and (owner := conn.execute(_JOB_OF_KEY, key_params).scalar()) is not None:
                    return owner
                user_limits.check_quotas(usage, limits, new_bytes=sum(i.size for i in inputs))
            conn.execute(_INSERT_JOB, {k: getattr(job, k) for k in JOB_COLUMNS})
            conn.execute(_INSERT_TASK, [{k: getattr(t, k) for k in TASK_COLUMNS} for t in job.tasks])
            if idempotency_key:
                conn.execute(_INSERT_KEY, {"user_id": user_id, "idempotency_key": idempotency_key,
                                           "job_id": job_id})
            return None

        def existing(conn: Connection) -> JobState | None:
            owner = conn.execute(_JOB_OF_KEY, key_params).scalar() if idempotency_key else None
            found = _load_jobs(conn, [owner or job_id], lock=False)
            return found[0] if found else None

        try:
            owner = await self._run(insert_rows, write=True)
        except IntegrityError:  # the job id, or (a concurrent call's) key, is taken
            raise JobExistsError(await self._run(existing)) from None
        if owner is not None:
            raise JobExistsError(await self._run(existing))
        return job

    async def get_job_by_key(self, user_id: str, idempotency_key: str) -> JobState | None:
        """The user's job created with this idempotency key, if it exists."""

        def find(conn: Connection) -> JobState | None:
            owner = conn.execute(_JOB_OF_KEY, {"user_id": user_id, "key": idempotency_key}).scalar()
            found = _load_jobs(conn, [owner], lock=False) if owner else []
            return found[0] if found else None

        return await self._run(find)

    async def get_job(self, user_id: str, job_id: str) -> JobState | None:
        found = await self._run(lambda conn: _load_jobs(conn, [job_id], lock=False))
        return found[0] if found and found[0].user_id == user_id else None

    async def list_jobs(
        self, user_id: str, *, status: str | None = None, limit: int = DEFAULT_LIMIT, cursor: str = ""
    ) -> tuple[list[JobState], str]:
        """The user's jobs, newest first; returns (jobs, next_cursor or "")."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        stmt = select(jobs.c.job_id).where(jobs.c.user_id == user_id)
        if status:
            stmt = stmt.where(jobs.c.status == status)
        if cursor:
            created, last_id = decode_cursor(cursor)
            stmt = stmt.where(
                or_(jobs.c.created_at < created, and_(jobs.c.created_at == created, jobs.c.job_id < last_id))
            )
        stmt = stmt.order_by(jobs.c.created_at.desc(), jobs.c.job_id.desc()).limit(limit + 1)

        def page(conn: Connection) -> tuple[list[JobState], bool]:
            ids = list(conn.execute(stmt).scalars())
            by_id = {j.job_id: j for j in _load_jobs(conn, ids[:limit], lock=False)}
            return [by_id[i] for i in ids[:limit] if i in by_id], len(ids) > limit

        found, more = await self._run(page)
        if not more or not found:
            return found, ""
        return found, encode_cursor(found[-1].created_at, found[-1].job_id)

    async def cancel_job(self, user_id: str, job_id: str) -> tuple[JobState | None, bool]:
        """Cancel the job's unfinished tasks; returns (job or None if not found, changed)."""
        now = utcnow()

        def cancel(conn: Connection) -> tuple[JobState | None, bool]:
            found = _load_jobs(conn, [job_id], lock=self._lock_rows)
            if not found or found[0].user_id != user_id:
                return None, False
            job = found[0]
            changed = [task for task in job.tasks if rules.cancel_task(task, now)]
            if changed:
                rules.derive_job(job, now)
                _save(conn, changed, [job])
            return job, bool(changed)

        return await self._run(cancel, write=True)

    async def delete_job(self, user_id: str, job_id: str) -> bool:
        params = {"job_id": job_id, "user_id": user_id}
        deleted = await self._run(lambda conn: conn.execute(_DELETE_JOB, params).rowcount, write=True)
        return bool(deleted)

    async def expired_jobs(self, finished_before: datetime, limit: int) -> list[tuple[str, str]]:
        """(user_id, job_id) of up to `limit` finished jobs last changed before `finished_before`,
        oldest first (retention)."""
        params = {"before": finished_before, "limit": limit}
        return await self._run(lambda conn: [(u, j) for u, j in conn.execute(_EXPIRED_JOBS, params)])

    async def existing_jobs(self, job_ids: Sequence[str]) -> set[tuple[str, str]]:
        """(user_id, job_id) of those of job_ids that exist."""
        ids = sorted(set(job_ids))
        if not ids:
            return set()

        def find(conn: Connection) -> set[tuple[str, str]]:
            found: set[tuple[str, str]] = set()
            for start in range(0, len(ids), _IDS_PER_QUERY):
                rows = conn.execute(_EXISTING_JOBS, {"job_ids": ids[start : start + _IDS_PER_QUERY]})
                found.update((user_id, job_id) for user_id, job_id in rows)
            return found

        return await self._run(find)

    # --- tasks ---

    async def get_task(self, user_id: str, task_id: str) -> TaskState | None:
        row = await self._run(lambda conn: conn.execute(_LOAD_TASK, {"task_id": task_id}).first())
        task = TaskState(*row) if row is not None else None
        return task if task is not None and task.user_id == user_id else None

    async def count_unpublished(self) -> int:
        return int(await self._run(lambda conn: conn.execute(_COUNT_UNPUBLISHED).scalar()) or 0)

    async def mark_published(self, task_ids: Sequence[str]) -> None:
        if not task_ids:
            return
        params = {"task_ids": list(task_ids), "at": utcnow()}
        await self._run(lambda conn: conn.execute(_MARK_PUBLISHED, params), write=True)

    async def ping(self) -> None:
        """A trivial query: raises while the database cannot be reached."""
        await self._run(lambda conn: conn.execute(select(1)))

    # --- per-user limits (limits.py has the rules) ---

    def _user_usage(self, conn: Connection, user_id: str, limits: UserLimits, now: datetime) -> Usage:
        """The user's usage, their row locked (created on first use) so that their checks and
        inserts never interleave across replicas; tokens refilled up to `now`."""
        params = {"user_id": user_id}
        row = conn.execute(_LOCK_USER if self._lock_rows else _LOAD_USER, params).first()
        if row is None:
            new = {"user_id": user_id, "tokens": float(limits.burst), "tokens_at": now}
            maker = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            conn.execute(maker(users).values(**new).on_conflict_do_nothing(index_elements=["user_id"]))
            row = conn.execute(_LOCK_USER if self._lock_rows else _LOAD_USER, params).one()
        tokens, tokens_at = row
        return Usage(
            user_id=user_id,
            active_jobs=int(conn.execute(_ACTIVE_JOBS, params).scalar() or 0),
            stored_bytes=int(conn.execute(_STORED_BYTES, params).scalar() or 0),
            tokens=user_limits.refill(tokens, tokens_at, now, limits) if limits.per_minute else 0.0,
        )

    async def admit(self, user_id: str, limits: UserLimits) -> Usage:
        """Take one submission token of the user if their rate and quotas allow a new job
        (limits.LimitExceededError otherwise, and nothing taken); their usage after it."""
        now = utcnow()

        def admit(conn: Connection) -> Usage:
            usage = self._user_usage(conn, user_id, limits, now)
            user_limits.check_rate(usage, limits)
            user_limits.check_quotas(usage, limits)
            if limits.per_minute:
                usage.tokens -= 1.0
                conn.execute(_TAKE_TOKEN, {"b_user_id": user_id, "tokens": usage.tokens, "at": now})
            return usage

        return await self._run(admit, write=True)

    async def usage(self, user_id: str, limits: UserLimits) -> Usage:
        now = utcnow()

        def read(conn: Connection) -> Usage:
            params = {"user_id": user_id}
            row = conn.execute(_LOAD_USER, params).first()
            tokens = user_limits.refill(row[0], row[1], now, limits) if row else float(limits.burst)
            return Usage(
                user_id=user_id,
                active_jobs=int(conn.execute(_ACTIVE_JOBS, params).scalar() or 0),
                stored_bytes=int(conn.execute(_STORED_BYTES, params).scalar() or 0),
                tokens=tokens if limits.per_minute else 0.0,
            )

        return await self._run(read)

    # --- fair dispatch (outbox.py) ---

    async def claim_dispatchable(
        self, *, cap: int, limit: int, lease_seconds: float
    ) -> list[tuple[JobState, TaskState]]:
        """Claim (for `lease_seconds`) up to `limit` pending unpublished tasks to publish, each with
        its job: of each user, their oldest, only as many as keep their tasks in flight (published
        or claimed, and unfinished) at most `cap` (0: no cap), round-robin across users."""
        now = utcnow()
        fresh = now - timedelta(seconds=lease_seconds)

        def claim(conn: Connection) -> list[tuple[JobState, TaskState]]:
            if conn.dialect.name == "postgresql":  # one claimer at a time across replicas
                conn.execute(_DISPATCH_LOCK)
            in_flight: dict[str, int] = {}
            if cap:
                in_flight = {user: n for user, n in conn.execute(_IN_FLIGHT, {"fresh": fresh})}
            rows = conn.execute(_WAITING, {"fresh": fresh, "per_user": cap or limit}).all()
            chosen = [
                (task_id, job_id) for task_id, job_id, user_id, rank in rows
                if not cap or rank <= cap - in_flight.get(user_id, 0)
            ][:limit]
            if not chosen:
                return []
            conn.execute(_CLAIM, {"task_ids": [t for t, _ in chosen], "at": now})
            by_job = {j.job_id: j for j in _load_jobs(conn, {j for _, j in chosen}, lock=False)}
            by_task = {t.task_id: (j, t) for j in by_job.values() for t in j.tasks}
            return [by_task[task_id] for task_id, _ in chosen if task_id in by_task]

        return await self._run(claim, write=True)

    async def release_claims(self, task_ids: Sequence[str]) -> None:
        """Tasks whose publish failed: claimable again at once."""
        if task_ids:
            await self._run(lambda conn: conn.execute(_RELEASE, {"task_ids": list(task_ids)}), write=True)

    # --- the reconciler (reconciler.py) ---

    async def stalled_tasks(
        self, cutoff: datetime, limit: int, after: tuple[datetime, str] | None = None
    ) -> tuple[list[tuple[JobState, TaskState]], tuple[datetime, str] | None]:
        """Published, unfinished tasks with neither an event nor a publish since `cutoff`, each
        with its job, oldest first: a page of at most `limit` after the cursor `after`, and the
        cursor of the next page (None: this was the last)."""

        def read(conn: Connection) -> tuple[list[tuple[JobState, TaskState]], tuple[datetime, str] | None]:
            params: dict[str, object] = {"cutoff": cutoff, "limit": limit}
            if after is not None:
                params.update(after_at=after[0], after_id=after[1])
            rows = conn.execute(_STALLED if after is None else _STALLED_AFTER, params).all()
            by_job = {j.job_id: j for j in _load_jobs(conn, {job_id for _, job_id, _ in rows}, lock=False)}
            by_task = {t.task_id: (j, t) for j in by_job.values() for t in j.tasks}
            page = [by_task[task_id] for task_id, _, _ in rows if task_id in by_task]
            cursor = (rows[-1][2], rows[-1][0]) if len(rows) == limit else None
            return page, cursor

        return await self._run(read)

    async def get_task_state(self, task_id: str) -> TaskState | None:
        row = await self._run(lambda conn: conn.execute(_LOAD_TASK, {"task_id": task_id}).first())
        return TaskState(*row) if row is not None else None

    async def fail_tasks(self, task_ids: Sequence[str], error: str) -> ApplyResult:
        """Fail these tasks where still unfinished (and recompute their jobs)."""
        now = utcnow()

        def fail(conn: Connection) -> ApplyResult:
            result = ApplyResult()
            job_ids = set(conn.execute(_JOB_IDS_OF_TASKS, {"task_ids": list(task_ids)}).scalars())
            found = _load_jobs(conn, job_ids, lock=self._lock_rows)
            wanted = set(task_ids)
            changed = [t for job in found for t in job.tasks
                       if t.task_id in wanted and rules.fail_task(t, error, now)]
            for task in changed:
                result.applied += 1
                result.finished += 1
                result.job_ids.add(task.job_id)
            result.jobs = [job for job in found if job.job_id in result.job_ids]
            for job in result.jobs:
                rules.derive_job(job, now)
            _save(conn, changed, result.jobs)
            return result

        if not task_ids:
            return ApplyResult()
        return await self._run(fail, write=True)

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

        def apply(conn: Connection) -> ApplyResult:
            result = ApplyResult()
            job_ids = set(named)
            if unnamed:
                job_ids.update(conn.execute(_JOB_IDS_OF_TASKS, {"task_ids": unnamed}).scalars())
            found = _load_jobs(conn, job_ids, lock=self._lock_rows)
            by_id = {t.task_id: t for job in found for t in job.tasks}
            existing = {job.job_id for job in found}
            result.orphan_keys = [
                o.key for e in events if e.job_id and e.job_id not in existing
                for o in e.result.outputs if _in_job_folder(o.key, e.job_id)
            ]
            changed: dict[str, TaskState] = {}
            for event in events:
                task = by_id.get(event.task_id)
                if task is not None and rules.apply_event(task, event, now):
                    result.applied += 1
                    result.finished += task.status in TERMINAL_NAMES
                    result.job_ids.add(task.job_id)
                    changed[task.task_id] = task
            if not changed:
                return result
            for job in found:
                if job.job_id in result.job_ids:
                    rules.derive_job(job, now)
                    result.jobs.append(job)
            _save(conn, changed.values(), result.jobs)
            return result

        return await self._run(apply, write=True)


def _in_job_folder(key: str, job_id: str) -> bool:
    try:
        return parse_key(key).job_id == job_id
    except ValueError:
        return False
