"""The jobs service's one model of a job and a task, and the tables that store them.

`JobState` and `TaskState` are plain dataclasses: the repository returns them, the rules change
them, and everything else reads them. `jobs` and `tasks` are the SQL schema (SQLAlchemy Core
tables, which the Alembic revisions must match); their columns are the dataclasses' fields, in the
same order, which is checked when this module is imported. No ORM: its identity map, attribute
events and flush cost more CPU than the SQL itself on the event hot path, which reads jobs, changes
a few fields and writes them back.

Statuses are stored as their short names (services.common.status) so the tables read well in
psql/sqlite3; times are stored in UTC (timestamptz on PostgreSQL, naive UTC text on SQLite).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 10_000


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class NewInput:
    """An input file of a job being created (already stored under its key)."""

    filename: str
    key: str
    format: str = ""
    size: int = 0
    # A ZIP's series, each a task of its own: (Series Instance UID, name for its outputs).
    series: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class TaskState:
    """One task: one input file of a job, processed once."""

    task_id: str
    job_id: str
    user_id: str
    position: int  # order of the input within the job
    status: str
    progress: int
    message: str
    input_file: str
    input_key: str
    input_format: str
    size: int
    output_stem: str
    error: str
    result: dict[str, Any] | None  # TaskResult as a dict (protobuf JSON names), once SUCCESS
    published: bool  # its TaskMessage was acknowledged by JetStream
    published_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    series_uid: str = ""  # the one series of a ZIP input this task processes; "" for the whole input
    output_bytes: int = 0  # sizes of its outputs, from its SUCCESS event (counted in the user's quota)
    claimed_at: datetime | None = None  # a dispatcher is publishing it (a lease: see outbox.py)
    logs: list[str] | None = None  # the processor's log lines, from the terminal event (cleaned)
    # Its first publish: the task deadline counts from here (a republish keeps it).
    dispatched_at: datetime | None = None


@dataclass(slots=True)
class JobState:
    """One job with its tasks, by position."""

    job_id: str
    user_id: str
    status: str
    progress: int
    message: str
    task_type: str
    params: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    tasks: list[TaskState] = field(default_factory=list)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python on every backend (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Fixed constraint/index names so the Alembic revisions and these tables agree on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("progress", Integer, nullable=False),
    Column("message", Text, nullable=False),
    Column("task_type", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_jobs_user_id_created_at_job_id", "user_id", "created_at", "job_id"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(36), primary_key=True),
    Column("job_id", String(36), ForeignKey("jobs.job_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("user_id", String(64), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("progress", Integer, nullable=False),
    Column("message", Text, nullable=False),
    Column("input_file", String(255), nullable=False),
    Column("input_key", Text, nullable=False),
    Column("input_format", String(16), nullable=False),
    Column("size", BigInteger, nullable=False),  # an upload may pass 2 GiB
    Column("output_stem", String(255), nullable=False),
    Column("error", Text, nullable=False),
    Column("result", JSON, nullable=True),
    Column("published", Boolean, nullable=False, index=True),
    Column("published_at", UTCDateTime, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("series_uid", String(64), nullable=False, server_default=""),
    Column("output_bytes", BigInteger, nullable=False, server_default="0"),
    Column("claimed_at", UTCDateTime, nullable=True),
    Column("logs", JSON, nullable=True),
    Column("dispatched_at", UTCDateTime, nullable=True),
    # The dispatcher counts each user's unfinished tasks (PENDING, RUNNING) among all the others.
    Index("ix_tasks_status_user_id", "status", "user_id"),
)

# One row per user who ever asked to submit: their submission token bucket. CreateJob and
# AdmitSubmission lock it (PostgreSQL), so one user's quota checks and inserts never interleave.
users = Table(
    "users",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("tokens_at", UTCDateTime, nullable=False),
)

# A client's Idempotency-Key of a job (POST /jobs): unique per user, so concurrent CreateJobs with
# one key create one job; removed with its job.
job_keys = Table(
    "job_keys",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("idempotency_key", String(128), primary_key=True),
    Column("job_id", String(36), ForeignKey("jobs.job_id", ondelete="CASCADE"), nullable=False, index=True),
)

JOB_COLUMNS = tuple(c.key for c in jobs.c)
TASK_COLUMNS = tuple(c.key for c in tasks.c)


def _check_fields(cls: type, columns: tuple[str, ...], extra: tuple[str, ...] = ()) -> None:
    names = tuple(f.name for f in dataclasses.fields(cls))
    if names != columns + extra:
        raise TypeError(f"{cls.__name__} fields {names} must be the table's columns {columns} + {extra}")


# The repository builds the dataclasses positionally from rows: same names, same order.
_check_fields(JobState, JOB_COLUMNS, ("tasks",))
_check_fields(TaskState, TASK_COLUMNS)


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Async engine; for SQLite: parent folder created, WAL, foreign keys on, busy timeout."""
    parsed = make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, pool_pre_ping=not is_sqlite, **kwargs)
    if is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def make_sync_sqlite_engine(url: str | URL) -> Engine:
    """A plain (pysqlite) engine on the same SQLite file, with the same pragmas."""
    engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
