"""Gateway test fixtures: fake backing services on real gRPC ports, and a client of the app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.config import Settings
from tests.gateway.fakes import Fakes, start_fakes
from tests.gateway.helpers import gateway_client


@pytest.fixture(scope="session")
async def fakes() -> AsyncIterator[Fakes]:
    f = await start_fakes()
    yield f
    for b in f.backends:
        await b.server.stop(None)


@pytest.fixture(autouse=True)
def _reset_fakes(fakes: Fakes) -> None:
    fakes.reset()


@pytest.fixture
def make_settings(fakes: Fakes, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "jobs_addr": fakes.addrs["jobs"],
            "storage_addr": fakes.addrs["storage"],
            "processor_addr": fakes.addrs["processor"],
            "data_dir": str(tmp_path / "data"),
            "signing_secret": "test-secret",
            "web_dir": str(tmp_path / "no-web"),
            "rpc_timeout_seconds": 5.0,
            "create_lookup_seconds": 1.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(make_settings()) as c:
        yield c
