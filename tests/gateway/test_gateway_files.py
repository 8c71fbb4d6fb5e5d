"""GET/HEAD /files: owner or signed token only, Range, ETag, safe segments; the signing key."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import httpx
import pytest

from services.gateway.signing import UrlSigner, load_or_create_secret
from tests.gateway.fakes import Fakes
from tests.gateway.helpers import PNG, upload

ALICE = {"X-User-ID": "alice"}
NOT_FOUND = b'{"detail":"Not found","code":"not_found"}'
DATA = PNG + bytes(range(256)) * 800  # ~200 KiB: several storage chunks


@pytest.fixture
async def stored(client: httpx.AsyncClient) -> tuple[str, str]:
    resp = await upload(client, [("files", "scan.png", DATA)])
    assert resp.status_code == 202
    job_id = resp.json()["job_id"]
    return job_id, f"/files/alice/{job_id}/scan.png"


def signed(path: str, secret: bytes = b"test-secret", ttl: int = 3600, now: float | None = None) -> str:
    _, _, user, job, name = path.split("/")
    return f"{path}?token={UrlSigner(secret, ttl).token(user, job, name, now=now)}"


async def test_owner_downloads_with_headers(client: httpx.AsyncClient, stored: tuple[str, str]) -> None:
    _, path = stored
    resp = await client.get(path, headers=ALICE)
    assert resp.status_code == 200
    assert resp.content == DATA
    assert resp.headers["content-type"] == "image/png"
    assert resp.headers["content-length"] == str(len(DATA))
    assert resp.headers["accept-ranges"] == "bytes"
    assert resp.headers["etag"].startswith('"') and resp.headers["etag"].endswith('"')
    assert resp.headers["content-disposition"] == 'inline; filename="scan.png"'
    assert resp.headers["cache-control"] == "private"


async def test_signed_token_works_without_identity(
    client: httpx.AsyncClient, stored: tuple[str, str]
) -> None:
    _, path = stored
    resp = await client.get(signed(path))
    assert resp.status_code == 200 and resp.content == DATA
    # ... and even for another user: the token is the capability.
    assert (await client.get(signed(path), headers={"X-User-ID": "bob"})).status_code == 200


async def test_bad_tokens_and_other_users_get_the_missing_404(
    client: httpx.AsyncClient, stored: tuple[str, str]
) -> None:
    job_id, path = stored
    good = signed(path)
    exp, sig = good.split("token=")[1].split(".")
    tampered_sig = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    other_file = signed(f"/files/alice/{job_id}/other.png").split("?")[1]
    cases = [
        path,  # no identity, no token
        f"{path}?token={exp}.{tampered_sig}",
        f"{path}?token={int(exp) + 10}.{sig}",  # extended expiry
        f"{path}?{other_file}",  # token for another path
        signed(path, now=time.time() - 7200),  # expired
        signed(path, secret=b"another-secret"),
        f"{path}?token=garbage",
    ]
    for url in cases:
        resp = await client.get(url)
        assert resp.status_code == 404, url
        assert resp.content == NOT_FOUND
    bob = await client.get(path, headers={"X-User-ID": "bob"})
    missing = await client.get(f"/files/alice/{job_id}/nothing.png", headers=ALICE)
    assert bob.status_code == missing.status_code == 404 and bob.content == missing.content == NOT_FOUND


@pytest.mark.parametrize(
    "path",
    [
        "/files/alice/..%2F..%2Fetc/passwd",
        "/files/alice/job/..",
        "/files/alice/job/.hidden",
        "/files/..%2Falice/job/scan.png",
        "/files/alice/job/a%00.png",
        "/files/alice/job/%E2%80%8Bx.png",
    ],
)
async def test_odd_segments_are_404(client: httpx.AsyncClient, path: str) -> None:
    resp = await client.get(path, headers=ALICE)
    assert resp.status_code == 404 and resp.json()["code"] == "not_found"


async def test_ranges(client: httpx.AsyncClient, stored: tuple[str, str]) -> None:
    _, path = stored
    size = len(DATA)
    for header, first, last in [
        ("bytes=0-99", 0, 99),
        ("bytes=100000-", 100000, size - 1),
        ("bytes=-500", size - 500, size - 1),
        (f"bytes=10-{size * 2}", 10, size - 1),
    ]:
        resp = await client.get(path, headers={**ALICE, "Range": header})
        assert resp.status_code == 206, header
        assert resp.content == DATA[first : last + 1]
        assert resp.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert resp.headers["content-length"] == str(last - first + 1)
    for header in (f"bytes={size}-", "bytes=-0"):
        resp = await client.get(path, headers={**ALICE, "Range": header})
        assert resp.status_code == 416
        assert resp.headers["content-range"] == f"bytes */{size}"
        assert resp.json()["code"] == "range_not_satisfiable"
    # Multi-range and malformed ranges are ignored: the whole file.
    for header in ("bytes=0-1,5-6", "items=0-1", "bytes=abc"):
        resp = await client.get(path, headers={**ALICE, "Range": header})
        assert resp.status_code == 200 and resp.content == DATA


async def test_etag_304_and_if_range(client: httpx.AsyncClient, stored: tuple[str, str]) -> None:
    _, path = stored
    etag = (await client.get(path, headers=ALICE)).headers["etag"]
    resp = await client.get(path, headers={**ALICE, "If-None-Match": etag})
    assert resp.status_code == 304 and resp.content == b"" and resp.headers["etag"] == etag
    resp = await client.get(path, headers={**ALICE, "If-None-Match": f'"other", W/{etag}'})
    assert resp.status_code == 304
    resp = await client.get(path, headers={**ALICE, "If-None-Match": '"other"'})
    assert resp.status_code == 200 and resp.content == DATA
    stale = await client.get(path, headers={**ALICE, "Range": "bytes=0-9", "If-Range": '"stale"'})
    assert stale.status_code == 200 and stale.content == DATA
    fresh = await client.get(path, headers={**ALICE, "Range": "bytes=0-9", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.content == DATA[:10]


async def test_head(client: httpx.AsyncClient, stored: tuple[str, str], fakes: Fakes) -> None:
    _, path = stored
    resp = await client.head(path, headers=ALICE)
    assert resp.status_code == 200 and resp.content == b""
    assert resp.headers["content-length"] == str(len(DATA))
    assert resp.headers["content-type"] == "image/png" and resp.headers["accept-ranges"] == "bytes"
    assert (await client.head(signed(path))).status_code == 200
    assert (await client.head(path)).status_code == 404


def test_signing_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path / "d")
    key = tmp_path / "d" / "signing.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert load_or_create_secret(tmp_path / "d") == first and len(first) >= 32
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["signing.key"]
    assert load_or_create_secret(tmp_path / "other") != first


def test_signed_url_round_trip_and_expiry() -> None:
    JOB = "0b8a4f4e-8d0b-4d6e-9a53-2f6f0d1c9e11"
    signer = UrlSigner(b"k", 60)
    url = signer.url("al@ice", JOB, "a.nii.gz")
    assert url.startswith(f"/files/al%40ice/{JOB}/a.nii.gz?token=")
    token = url.split("token=")[1]
    assert signer.verify("al@ice", JOB, "a.nii.gz", token)
    assert not signer.verify("al@ice", JOB, "b.nii.gz", token)
    assert not signer.verify("al@ice", JOB, "a.nii.gz", token, now=time.time() + 120)
