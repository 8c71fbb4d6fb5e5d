"""The OpenAPI document against the real gateway of a running platform: schemathesis generates
requests for every operation (examples, edge cases, random data and linked sequences) and checks
every answer: no 5xx, each status and body as documented, the documented content type and headers,
405 with the right Allow for a method a path does not answer, and OPTIONS naming exactly the
documented methods. Bounded in time (MAX_SECONDS) and examples, so it fits in `make test`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "unsupported_method",
    "allow_header_conformance",
])
MAX_SECONDS = 120  # the whole run, every phase
MAX_EXAMPLES = 20  # per operation and phase
SEED = 20261130  # fixed, so that a failure is replayed the same way


def _cli() -> str:
    found = Path(sys.executable).with_name("schemathesis")
    return str(found) if found.exists() else (shutil.which("schemathesis") or "schemathesis")


@pytest.mark.timeout(MAX_SECONDS + 180)
def test_the_real_gateway_keeps_its_documented_contract(platform: Any, tmp_path: Path) -> None:
    command = [
        _cli(), "run", f"{platform.base_url}/openapi.json",
        "--checks", CHECKS,
        "--header", "X-User-ID: schemathesis",
        "--max-examples", str(MAX_EXAMPLES),
        "--max-time", str(MAX_SECONDS),
        "--workers", "2",
        "--seed", str(SEED),
        "--request-timeout", "30",
        # The machine is shared and slow at times: the health check that fails slow generation
        # would fail the run for the machine's load, not for the API.
        "--suppress-health-check", "too_slow",
        "--no-color",
    ]
    start = time.monotonic()
    # Its own working directory: the run's caches (.hypothesis, reports) stay out of the repository.
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                          timeout=MAX_SECONDS + 150)
    took = time.monotonic() - start
    output = done.stdout + done.stderr
    summary = re.search(r"(\d+) generated, (\d+) passed", output)
    print(f"\nschemathesis: {summary.group(0) if summary else '?'} in {took:.0f}s")
    assert done.returncode == 0, output[-12000:]
    assert summary is not None and summary.group(1) == summary.group(2), output[-4000:]
    assert int(summary.group(1)) > 500, output[-4000:]  # it did generate, within the time bound
