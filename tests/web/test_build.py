"""The built web app (`make web` = `npm ci && npm run build` in web/) exists and is self-contained:
index.html loads only files of web/dist, nothing from a CDN or any other host."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
DIST = WEB / "dist"


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value:
                self.refs.append(value)


def test_package_has_build_script_and_lockfile():
    pkg = json.loads((WEB / "package.json").read_text())
    assert "build" in pkg["scripts"]
    assert "@niivue/niivue" in pkg["dependencies"]
    assert (WEB / "package-lock.json").exists(), "commit web/package-lock.json (npm ci needs it)"


def test_build_output_exists_and_references_only_local_assets():
    index = DIST / "index.html"
    assert index.exists(), "web/dist/index.html is missing: run `make web` (npm ci && npm run build in web/)"
    html = index.read_text()
    assert not re.search(r"https?://", html), "index.html must not reference remote URLs"
    parser = _Refs()
    parser.feed(html)
    assert parser.refs, "index.html references no assets"
    for ref in parser.refs:
        if ref.startswith(("data:", "#")):
            continue
        assert not ref.startswith("//"), f"protocol-relative URL in index.html: {ref}"
        path = DIST / ref.lstrip("/").split("?")[0]
        assert path.is_file(), f"index.html references {ref}, which is not in web/dist"
    # The bundle and its stylesheet do not load anything from another host either.
    for asset in DIST.rglob("*"):
        if asset.suffix == ".css":
            assert not re.search(r"url\(\s*['\"]?(https?:)?//", asset.read_text()), asset
        if asset.suffix == ".js":
            text = asset.read_text(errors="replace")
            assert not re.search(r"""import\s*\(?\s*["'](https?:)?//""", text), f"remote import in {asset}"
