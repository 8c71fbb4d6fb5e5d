"""Fixtures of the browser tests: Debian's chromium driven by Playwright, against the platform
started as `make run` starts it (the `platform` fixture of tests/conftest.py), or against a
server already running when RADIOLOGY_WEB_TEST_URL is set (for working on the UI)."""

from __future__ import annotations

import io
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "web"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--no-first-run",
]
VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture(scope="session")
def base_url(request: pytest.FixtureRequest) -> str:
    if url := os.environ.get("RADIOLOGY_WEB_TEST_URL"):
        return url.rstrip("/")
    return request.getfixturevalue("platform").base_url.rstrip("/")


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[object]:
    """Debian's chromium (the `chromium_path` fixture skips, or fails in CI, when it is missing)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, base_url: str) -> Iterator[object]:
    context = browser.new_context(viewport=VIEWPORT, base_url=base_url)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(30_000)
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="session")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


def new_user(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sign_in(page, user: str) -> None:
    """Opens the app (if needed) and sets the user id through the identity form."""
    if not page.url.startswith("http"):
        page.goto("/")
    page.get_by_label("User ID").fill(user)
    page.get_by_role("button", name="Use this ID").click()
    page.get_by_text(f"Signed in as {user}").wait_for()


def show_side_panel(page) -> None:
    """Opens the side panel (new job, jobs, studies) when an open result has folded it away."""
    if page.locator("#main").get_attribute("data-side") != "open":
        page.locator("#toggle-side").click()
    page.locator('#main[data-side="open"]').wait_for()


@pytest.fixture(scope="session")
def sample_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 256x256 PNG with sharp edges, so that a blur visibly changes it."""
    from PIL import Image

    y, x = np.mgrid[0:256, 0:256]
    img = np.where(((x // 32) + (y // 32)) % 2 == 0, 230, 20).astype(np.uint8)
    rgb = np.stack([img, img, np.flipud(img)], axis=-1)
    path = tmp_path_factory.mktemp("web") / "checker.png"
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture(scope="session")
def anatomical_nii() -> Path:
    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    assert path.exists(), path
    return path


@pytest.fixture(scope="session")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web") / "notes.txt"
    path.write_text("This is not an image.\n" * 20)
    return path


def pixel_stats(png: bytes) -> dict[str, float]:
    """Fraction of non-background pixels, colourful pixels, grey-level spread, distinct colours."""
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    lum = a.mean(axis=2)
    chroma = a.max(axis=2) - a.min(axis=2)
    return {
        "nonblack": float((lum > 12).mean()),
        "colour": float((chroma > 40).mean()),
        "std": float(lum.std()),
        "distinct": float(len(np.unique(a.reshape(-1, 3), axis=0))),
    }


def job_id_from_url(url: str) -> str | None:
    m = re.search(r"#job/([0-9a-fA-F-]+)", url)
    return m.group(1) if m else None
