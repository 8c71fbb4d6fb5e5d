"""Per-user limits on the real platform: the submission rate (429 rate_limited with Retry-After), the
active jobs (429 too_many_active_jobs) and the stored bytes (413 storage_quota_exceeded), each
refusal leaving nothing stored; GET /usage shows it all."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import start_platform
from tests.e2e.conftest import client, png_bytes, stored_keys, submit

QUOTA = 1024 * 1024
ENV = {
    "RADIOLOGY_RATE_LIMIT_PER_MINUTE": "6",
    "RADIOLOGY_RATE_LIMIT_BURST": "4",
    "RADIOLOGY_MAX_ACTIVE_JOBS_PER_USER": "2",
    "RADIOLOGY_MAX_STORED_BYTES_PER_USER": str(QUOTA),
}


def noise_png(side: int) -> bytes:
    """A PNG that does not compress (its size is what it stores)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    pixels = np.random.default_rng(side).integers(0, 255, (side, side), dtype=np.uint8)
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    platform = start_platform(tmp_path_factory.mktemp("limits"), env=ENV)
    yield platform
    platform.stop()


def test_the_submission_rate(limited) -> None:  # type: ignore[no-untyped-def]
    with client(limited, "rate") as c:
        for _ in range(4):  # the burst
            r = submit(c, [("a.png", png_bytes())])
            assert r.status_code == 202, r.text
            c.post(f"/jobs/{r.json()['job_id']}/cancel")  # not counted as active
        refused = submit(c, [("a.png", png_bytes())])
        assert refused.status_code == 429 and refused.json()["code"] == "rate_limited", refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 10  # 6 a minute: one every 10 s
        assert "a minute" in refused.json()["detail"]
        assert len({key.split("/")[0] for key in stored_keys(limited, "rate")}) == 4
        usage = c.get("/usage").json()
    assert usage["submissions_available"] == 0
    assert usage["limits"] == {"submissions_per_minute": 6, "submission_burst": 4, "max_active_jobs": 2,
                               "max_stored_bytes": QUOTA}


def test_active_jobs_and_stored_bytes(limited) -> None:  # type: ignore[no-untyped-def]
    limited.stop_service("processor")  # jobs stay PENDING
    try:
        with client(limited, "hoarder") as c:
            first = submit(c, [("a.png", noise_png(700))])  # ~490 KB
            assert first.status_code == 202, first.text
            over = submit(c, [("b.png", noise_png(800))])  # ~640 KB more: over the 1 MiB quota
            assert over.status_code == 413 and over.json()["code"] == "storage_quota_exceeded", over.text
            assert [k.split("/")[0] for k in stored_keys(limited, "hoarder")] == [first.json()["job_id"]]
            second = submit(c, [("c.png", png_bytes())])
            assert second.status_code == 202, second.text
            busy = submit(c, [("d.png", png_bytes())])
            assert busy.status_code == 429 and busy.json()["code"] == "too_many_active_jobs", busy.text
            assert "Retry-After" in busy.headers
            usage = c.get("/usage").json()
            assert usage["active_jobs"] == 2
            assert usage["stored_bytes"] == len(noise_png(700)) + len(png_bytes())
            assert len(stored_keys(limited, "hoarder")) == 2
            # Deleting a job frees its slot and its bytes.
            assert c.delete(f"/jobs/{first.json()['job_id']}").status_code == 204
            assert submit(c, [("b.png", noise_png(800))]).status_code == 202
    finally:
        limited.start_service("processor")
