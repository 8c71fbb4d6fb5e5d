"""Backends under test: a local folder and a bucket on a real S3-protocol server (moto_server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.storage.backends import Backend, LocalBackend

from .helpers import make_s3


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "local":
        store: Backend = LocalBackend(tmp_path / "objects")
    else:
        store = make_s3(request.getfixturevalue("s3_endpoint"))
    yield store
    await store.close()

