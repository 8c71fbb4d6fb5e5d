"""End-to-end helpers: real nats-server, the four real services as processes, HTTP from outside."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

SITE = Path(np.__file__).resolve().parent.parent
PYDICOM_FILES = SITE / "pydicom" / "data" / "test_files"
NIBABEL_FILES = SITE / "nibabel" / "tests" / "data"
TERMINAL = {"SUCCESS", "FAILED", "CANCELLED"}

pytestmark = pytest.mark.slow


def client(platform: Any, user: str | None = "alice") -> httpx.Client:
    headers = {"X-User-ID": user} if user else {}
    return httpx.Client(base_url=platform.base_url, headers=headers, timeout=30)


def submit(c: httpx.Client, files: list[tuple[str, bytes]], task_type: str = "blur",
           params: dict[str, Any] | None = None) -> httpx.Response:
    import json

    data = {"task_type": task_type}
    if params is not None:
        data["params"] = json.dumps(params)
    return c.post("/jobs", files=[("files", (name, body)) for name, body in files], data=data)


def wait_job(c: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll like the seed's clients do, until the job reaches a terminal status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished after {timeout}s: {job}")


def png_bytes(size: tuple[int, int] = (96, 64), mode: str = "L", seed: int = 0) -> bytes:
    """A test image with edges and noise, so a blur visibly changes it."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    base = np.zeros((h, w), np.float32)
    base[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 200
    base += rng.normal(0, 20, base.shape)
    arr = np.clip(base, 0, 255).astype(np.uint8)
    if mode == "RGB":
        arr = np.stack([arr, 255 - arr, arr // 2], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(size: tuple[int, int] = (80, 60)) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(size, "RGB"))).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def stored_keys(platform: Any, user: str) -> list[str]:
    """Object keys under a user in the local storage folder (the default backend)."""
    root = platform.data_dir / "objects" / "data" / user
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def download(c: httpx.Client, url: str) -> bytes:
    r = c.get(url)
    assert r.status_code == 200, (url, r.status_code, r.text[:200])
    return r.content
