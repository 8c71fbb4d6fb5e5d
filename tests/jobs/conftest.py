"""Fixtures of the jobs tests: migrated databases (SQLite file, PostgreSQL in a private schema),
a private nats-server, a fake StorageService and a running jobs service."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.common import messaging
from services.common.gen.radiology.v1 import storage_pb2_grpc
from services.jobs.migrate import upgrade
from services.jobs.models import make_engine
from services.jobs.repository import Repository

from .harness import FakeStorage, Running, StorageServer, start_jobs


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An empty database: a fresh SQLite file, or a fresh schema in the shared PostgreSQL database
    (dropped afterwards, so parallel runs and other teams never see each other's tables)."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite+aiosqlite:///{tmp_path}/jobs.db")
        yield eng
        await eng.dispose()
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"jobs_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield eng
    finally:
        await eng.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture
async def repo(engine: AsyncEngine) -> Repository:
    await upgrade(engine)
    return Repository(engine)


# --- service fixtures ---


@pytest.fixture(scope="module")
def private_nats(nats_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A nats-server of our own (same class as the shared fixture's), so no other test's consumers
    take our task messages and stopping it harms nobody."""
    server = type(nats_server)(tmp_path_factory.mktemp("jobs-nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def fake_storage() -> AsyncIterator[StorageServer]:
    servicer = FakeStorage()
    server = grpc.aio.server()
    storage_pb2_grpc.add_StorageServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield StorageServer(f"127.0.0.1:{port}", servicer, server)
    await server.stop(0)


@pytest.fixture
async def jobs(private_nats: Any, fake_storage: StorageServer, tmp_path: Path) -> AsyncIterator[Running]:
    running = await start_jobs(private_nats.url, fake_storage.addr, tmp_path / "jobs.db")
    await running.js.purge_stream(messaging.TASKS_STREAM)
    yield running
    for close in running._closers:
        await close()
