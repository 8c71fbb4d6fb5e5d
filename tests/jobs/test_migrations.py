"""The Alembic revisions build the schema from nothing, and agree with the tables of models.py."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.jobs.migrate import alembic_config, upgrade
from services.jobs.models import metadata


def _diff(conn: Connection) -> list:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return compare_metadata(ctx, metadata)


async def test_upgrade_from_empty_matches_models(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(lambda c: inspect(c).get_table_names()) == []

    await upgrade(engine)

    async with engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert {"jobs", "tasks", "alembic_version"} <= tables
        indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("tasks")})
        assert {"ix_tasks_job_id", "ix_tasks_user_id", "ix_tasks_published"} <= indexes
        job_indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("jobs")})
        assert "ix_jobs_user_id_created_at_job_id" in job_indexes
        fks = await conn.run_sync(lambda c: inspect(c).get_foreign_keys("tasks"))
        assert fks[0]["referred_table"] == "jobs" and fks[0]["options"].get("ondelete") == "CASCADE"
        assert await conn.run_sync(_diff) == []
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert version == head


async def test_upgrade_twice_is_a_no_op(engine: AsyncEngine) -> None:
    await upgrade(engine)
    await upgrade(engine)  # a restart of the service
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT count(*) FROM alembic_version"))).scalar_one()
    assert rows == 1


async def test_sqlite_pragmas(tmp_path) -> None:
    from services.jobs.models import make_engine

    eng = make_engine(f"sqlite+aiosqlite:///{tmp_path}/sub/dir/jobs.db")  # folder created
    try:
        async with eng.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() >= 1000
    finally:
        await eng.dispose()


async def test_replicas_starting_together_take_turns(postgres_url: str) -> None:
    """Several jobs replicas upgrading the same PostgreSQL database at once all start cleanly."""
    import asyncio
    import uuid

    from sqlalchemy.ext.asyncio import create_async_engine

    from services.jobs.models import make_engine

    schema = f"jobs_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(postgres_url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engines = [make_engine(postgres_url, connect_args={"options": f"-csearch_path={schema}"})
               for _ in range(3)]
    try:
        await asyncio.wait_for(asyncio.gather(*(upgrade(e) for e in engines)), 60)  # unlocked: deadlock
        async with engines[0].connect() as conn:
            rows = (await conn.execute(text("SELECT count(*) FROM alembic_version"))).scalar_one()
        assert rows == 1
    finally:
        for e in engines:
            await e.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def test_limits_revision_fills_in_output_sizes_of_earlier_results(engine: AsyncEngine) -> None:
    await upgrade(engine, "0001")
    now = "2025-01-01 00:00:00"
    result = '{"outputs": [{"key": "a/j/x.png", "size": "120"}, {"key": "a/j/y.png", "size": "30"}]}'
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO jobs VALUES ('j', 'a', 'SUCCESS', 100, '', 'blur', '{}', :now, :now)"), {"now": now})
        for task_id, status, res in (("t1", "SUCCESS", result), ("t2", "FAILED", None)):
            await conn.execute(text(
                "INSERT INTO tasks VALUES (:id, 'j', 'a', 0, :status, 100, '', 'x.png', 'a/j/x.png', 'png', "
                "7, 'x', '', :res, true, :now, :now, :now, :now)"),
                {"id": task_id, "status": status, "res": res, "now": now})
    await upgrade(engine)
    async with engine.connect() as conn:
        rows = dict((await conn.execute(text("SELECT task_id, output_bytes FROM tasks"))).all())
    assert rows == {"t1": 150, "t2": 0}
