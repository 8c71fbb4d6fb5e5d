"""Run the Alembic migrations programmatically (at service start and in tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

SCRIPT_LOCATION = str(Path(__file__).resolve().parent / "migrations")
# Any fixed number: replicas starting together on PostgreSQL take turns upgrading.
_MIGRATION_LOCK = 0x7261646A6F6273  # "radjobs"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """`alembic upgrade head` on the engine's database, in one transaction."""

    def _upgrade(sync_conn: Connection) -> None:
        if sync_conn.dialect.name == "postgresql":  # held until this transaction ends
            sync_conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        command.upgrade(alembic_config(sync_conn), revision)

    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
