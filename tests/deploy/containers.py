"""Images and a compose project for the compose end-to-end test, with podman and no registry.

Base images come from Debian packages (mmdebstrap), the platform image from the Dockerfile with the
wheelhouse of `make wheels` and the prebuilt web UI, and stand-ins for NATS, PostgreSQL, S3 and
Prometheus from deploy/compose/ci/. Tarballs and wheels are cached in RADIOLOGY_CI_CACHE (default
/var/cache/radiology-ci), so a second run only rebuilds what changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.deploy.conftest import BIN, ROOT

CACHE = Path(os.environ.get("RADIOLOGY_CI_CACHE", "/var/cache/radiology-ci"))
BASE_IMAGE = "localhost/radiology-base:bookworm"
DEBIAN_EXTRAS_IMAGE = "localhost/radiology-ci-debian:bookworm"
APP_IMAGE = "localhost/radiology:ci"
POSTGRES_IMAGE = "localhost/radiology-ci-postgres:latest"
S3_IMAGE = "localhost/radiology-ci-s3:latest"
PROMETHEUS_IMAGE = "localhost/radiology-ci-prometheus:latest"
MOTO_REQUIREMENT = "moto[server]==5.2.5"

# (image, tarball, Debian packages); path-excludes keep docs and unused data out.
_DEBIAN_BASES = (
    (BASE_IMAGE, "base.tar", "python3,python3-venv,ca-certificates"),
    (DEBIAN_EXTRAS_IMAGE, "debian-extras.tar", "postgresql-15,prometheus,wget,ca-certificates"),
)
_EXCLUDES = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/locale/*",
    "/usr/share/javascript/moment-timezone/data/unpacked/*",
)


def run(cmd: list[str], timeout: float, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], timeout=60).returncode == 0


def ensure_debian_bases() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    for image, tarball, packages in _DEBIAN_BASES:
        if image_exists(image):
            continue
        tar = CACHE / tarball
        if not tar.exists():
            part = CACHE / f"{tar.stem}.part.tar"
            cmd = ["mmdebstrap", "--variant=minbase", f"--include={packages}"]
            cmd += [f"--dpkgopt=path-exclude={p}" for p in _EXCLUDES]
            run([*cmd, "bookworm", str(part)], timeout=900)
            part.rename(tar)
        run(["podman", "import", "--quiet", str(tar), image], timeout=600)


def build_images() -> dict[str, float]:
    """Every image the CI stack needs; returns seconds per step (for the report)."""
    timings: dict[str, float] = {}
    t = time.monotonic()
    ensure_debian_bases()
    timings["debian bases"] = time.monotonic() - t

    t = time.monotonic()
    run(["make", "-C", str(ROOT), "wheels"], timeout=900)
    ci_wheels = CACHE / "ci-wheels"
    run(
        ["make", "-C", str(ROOT), "wheels", f"WHEELHOUSE={ci_wheels}", f"WHEELS_EXTRA={MOTO_REQUIREMENT}"],
        timeout=900,
    )
    timings["wheels"] = time.monotonic() - t

    t = time.monotonic()
    assert (ROOT / "web" / "dist" / "index.html").exists(), "web/dist is missing: run `make web`"
    run(
        [
            "podman",
            "build",
            "--quiet",
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            "--build-arg",
            "WEB_FROM=web-prebuilt",
            "-t",
            APP_IMAGE,
            str(ROOT),
        ],
        timeout=1200,
    )
    timings["platform image"] = time.monotonic() - t

    t = time.monotonic()
    ci = ROOT / "deploy" / "compose" / "ci"
    for image, containerfile in (
        (POSTGRES_IMAGE, "postgres.Containerfile"),
        (PROMETHEUS_IMAGE, "prometheus.Containerfile"),
    ):
        run(
            [
                "podman",
                "build",
                "--quiet",
                "--build-arg",
                f"DEBIAN_EXTRAS={DEBIAN_EXTRAS_IMAGE}",
                "-f",
                str(ci / containerfile),
                "-t",
                image,
                str(ci),
            ],
            timeout=600,
        )
    context = CACHE / "s3-context"
    shutil.rmtree(context, ignore_errors=True)
    (context / "wheels").mkdir(parents=True)
    for wheel in ci_wheels.glob("*.whl"):
        os.link(wheel, context / "wheels" / wheel.name)
    shutil.copy(ci / "s3-standin.py", context / "s3-standin.py")
    run(
        [
            "podman",
            "build",
            "--quiet",
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            "-f",
            str(ci / "s3.Containerfile"),
            "-t",
            S3_IMAGE,
            str(context),
        ],
        timeout=600,
    )
    timings["stand-in images"] = time.monotonic() - t
    return timings


class ComposeProject:
    """docker-compose.yml + deploy/compose/ci.yml under podman-compose, as one project."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = {**os.environ, **env}
        self.compose = [
            str(BIN / "podman-compose"),
            "--project-name",
            name,
            "-f",
            str(ROOT / "docker-compose.yml"),
            "-f",
            str(ROOT / "deploy" / "compose" / "ci.yml"),
        ]

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*self.compose, *args], timeout=timeout, check=check, env=self.env, cwd=ROOT)

    def up(self) -> None:
        self.run("up", "-d", "--no-build", timeout=600)

    def down(self, volumes: bool = False) -> None:
        self.run("down", *(["--volumes"] if volumes else []), "--timeout", "30", timeout=600, check=False)

    def containers(self) -> list[dict]:
        out = run(
            [
                "podman",
                "ps",
                "-a",
                "--format",
                "json",
                "--filter",
                f"label=io.podman.compose.project={self.name}",
            ],
            timeout=60,
        ).stdout
        return json.loads(out or "[]")

    def container_names(self, service: str) -> list[str]:
        return sorted(
            c["Names"][0]
            for c in self.containers()
            if c.get("Labels", {}).get("com.docker.compose.service") == service
        )

    def wait_healthy(self, timeout: float = 300) -> None:
        """Run every container's healthcheck until all pass. (podman runs healthchecks from
        systemd timers; without systemd nothing runs them, so the test does, the way Docker would.)"""
        deadline = time.monotonic() + timeout
        pending: list[str] = []
        while time.monotonic() < deadline:
            pending = []
            for c in self.containers():
                name = c["Names"][0]
                if c.get("State") != "running":
                    pending.append(f"{name} ({c.get('State')})")
                    continue
                result = subprocess.run(
                    ["podman", "healthcheck", "run", name], capture_output=True, text=True, timeout=60
                )
                if result.returncode != 0 and "has no defined healthcheck" not in result.stderr:
                    pending.append(name)
            if not pending:
                return
            time.sleep(2)
        raise AssertionError(f"not healthy after {timeout}s: {pending}\n{self.logs_tail()}")

    def logs(self, container: str) -> str:
        result = run(["podman", "logs", container], timeout=60, check=False)
        return result.stdout + result.stderr

    def logs_tail(self, lines: int = 15) -> str:
        parts = []
        for c in self.containers():
            name = c["Names"][0]
            tail = "\n".join(self.logs(name).splitlines()[-lines:])
            parts.append(f"--- {name} ({c.get('State')})\n{tail}")
        return "\n".join(parts)

    def exec(self, container: str, *cmd: str, timeout: float = 60) -> str:
        return run(["podman", "exec", container, *cmd], timeout=timeout).stdout

    def remove_everything(self) -> None:
        """down -v, then anything left with the project's label (also after a failed test)."""
        self.down(volumes=True)
        for c in self.containers():
            subprocess.run(["podman", "rm", "-f", "-t", "0", c["Names"][0]], capture_output=True, timeout=120)
        volumes = run(
            ["podman", "volume", "ls", "-q", "--filter", f"label=io.podman.compose.project={self.name}"],
            timeout=60,
            check=False,
        ).stdout.split()
        for volume in volumes:
            subprocess.run(["podman", "volume", "rm", "-f", volume], capture_output=True, timeout=120)
        for network in run(
            ["podman", "network", "ls", "-q", "--filter", f"label=io.podman.compose.project={self.name}"],
            timeout=60,
            check=False,
        ).stdout.split():
            subprocess.run(["podman", "network", "rm", "-f", network], capture_output=True, timeout=120)
        subprocess.run(["podman", "pod", "rm", "-f", f"pod_{self.name}"], capture_output=True, timeout=120)
