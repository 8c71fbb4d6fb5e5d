"""Deployment tests: the image, docker-compose.yml and deploy/k8s.

Tools they need and what happens without them:
- kubectl (renders kustomize offline): missing, the Kubernetes tests skip; RADIOLOGY_REQUIRE_KUBECTL=1
  (CI) makes them fail instead.
- podman + podman-compose (+ mmdebstrap the first time) for the compose end-to-end test: missing,
  it skips; RADIOLOGY_REQUIRE_CONTAINERS=1 (CI) makes it fail instead.
- promtool (Debian's `prometheus` package) for the alert rules: missing, skipped unless
  RADIOLOGY_REQUIRE_PROMTOOL=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
OVERLAYS = ("dev", "prod")
BIN = Path(sys.executable).parent


def need_tool(name: str, require_env: str, why: str, path: str | None = None) -> str:
    """Path of a command-line tool; skip (or fail when `require_env` is set) without it."""
    found = path if path and Path(path).exists() else shutil.which(name)
    if not found and (BIN / name).exists():
        found = str(BIN / name)
    if found:
        return found
    message = f"{why} skipped: `{name}` is not installed (CI sets {require_env}=1 and installs it)"
    if os.environ.get(require_env):
        pytest.fail(f"{require_env} is set but `{name}` is missing")
    pytest.skip(message)


def load_yaml_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


_rendered: dict[str, list[dict]] = {}


def render_overlay(overlay: str) -> list[dict]:
    """`kubectl kustomize deploy/k8s/overlays/<overlay>` as a list of objects (cached)."""
    if overlay not in _rendered:
        kubectl = need_tool(
            "kubectl", "RADIOLOGY_REQUIRE_KUBECTL", "Kubernetes manifest tests", "/usr/bin/kubectl"
        )
        result = subprocess.run(
            [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        _rendered[overlay] = load_yaml_docs(result.stdout)
    return _rendered[overlay]


def compose_doc() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())
