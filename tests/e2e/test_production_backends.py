"""The same platform on PostgreSQL and an S3-protocol object store (as in production)."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import start_platform
from tests.e2e.conftest import PYDICOM_FILES, client, download, png_bytes, submit, wait_job


@pytest.fixture
def postgres_database(postgres_url: str):  # type: ignore[no-untyped-def]
    """A fresh database on the test server, dropped afterwards."""
    url = make_url(postgres_url)
    name = f"radiology_e2e_{uuid.uuid4().hex[:8]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_and_s3(tmp_path, postgres_database: str, s3_endpoint: str) -> None:
    platform = start_platform(tmp_path / "data", env={
        "RADIOLOGY_DATABASE_URL": postgres_database,
        "RADIOLOGY_STORAGE_URL": f"s3://{s3_endpoint}/radiology-e2e",
        "RADIOLOGY_S3_ACCESS_KEY": "test",
        "RADIOLOGY_S3_SECRET_KEY": "test",
    })
    try:
        with client(platform) as c:
            r = submit(c, [("ct.dcm", (PYDICOM_FILES / "CT_small.dcm").read_bytes()),
                           ("p.png", png_bytes())])
            assert r.status_code == 202, r.text
            job = wait_job(c, r.json()["job_id"])
            assert job["status"] == "SUCCESS", job
            for task in job["task_results"]:
                body = download(c, task["result"]["output_url"])
                assert body.startswith(b"\x89PNG")
                # Ranged read straight from the S3 server.
                part = c.get(task["result"]["output_url"], headers={"Range": "bytes=1-3"})
                assert part.status_code == 206 and part.content == b"PNG"
            assert c.delete(f"/jobs/{job['job_id']}").status_code == 204
            assert c.get(f"/jobs/{job['job_id']}").status_code == 404
            assert c.get(f"/files/alice/{job['job_id']}/ct.dcm").status_code == 404
        # Nothing on local disk: the objects went to S3.
        assert not (platform.data_dir / "objects").exists()
    finally:
        platform.stop()
