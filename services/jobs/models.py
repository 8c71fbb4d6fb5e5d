"""SQLAlchemy models of jobs and tasks, and the async engine factory.

Statuses are stored as their short names ("PENDING", "RUNNING", ...) so the tables read well in
psql/sqlite3; times are stored in UTC (timestamptz on PostgreSQL, naive UTC text on SQLite).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

PENDING, RUNNING, SUCCESS, FAILED, CANCELLED = "PENDING", "RUNNING", "SUCCESS", "FAILED", "CANCELLED"
TERMINAL = frozenset({SUCCESS, FAILED, CANCELLED})

SQLITE_BUSY_TIMEOUT_MS = 10_000


def utcnow() -> datetime:
    return datetime.now(UTC)


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


class Base(DeclarativeBase):
    # Fixed constraint/index names so the Alembic revision and the models agree on every backend.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class JobRow(Base):
    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    task_type: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    # Always needed with the job (the Job message carries its tasks); one extra SELECT per query.
    tasks: Mapped[list[TaskRow]] = relationship(
        back_populates="job", order_by="TaskRow.position", lazy="selectin", passive_deletes=True
    )

    __table_args__ = (Index("ix_jobs_user_id_created_at_job_id", "user_id", "created_at", "job_id"),)


class TaskRow(Base):
    __tablename__ = "tasks"

    task_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.job_id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    input_file: Mapped[str] = mapped_column(String(255))
    input_key: Mapped[str] = mapped_column(Text)
    input_format: Mapped[str] = mapped_column(String(16), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    output_stem: Mapped[str] = mapped_column(String(255))
    error: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    published: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    job: Mapped[JobRow] = relationship(back_populates="tasks", lazy="raise")


class JobState:
    """A job row with its tasks as plain attributes (same names as JobRow), read with Core.

    Building these costs about 1 us a row against about 40 us for ORM instances, and the hot paths
    (event batches, WatchJob reads) only read them, change a few fields and write those back."""

    job_id: str
    user_id: str
    status: str
    progress: int
    message: str
    task_type: str
    params: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    tasks: list[TaskState]

    def __init__(self, values: dict[str, Any], tasks: list[TaskState]) -> None:
        self.__dict__.update(values)
        self.tasks = tasks


class TaskState:
    """A task row as plain attributes (same names as TaskRow); see JobState."""

    task_id: str
    job_id: str
    user_id: str
    position: int
    status: str
    progress: int
    message: str
    input_file: str
    input_key: str
    input_format: str
    size: int
    output_stem: str
    error: str
    result: dict[str, Any] | None
    published: bool
    published_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


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
