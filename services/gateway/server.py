"""Entry point: `python -m services.gateway.server` (configured by RADIOLOGY_* variables)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from services.common import runtime
from services.common.config import Settings
from services.common.logging import setup_logging
from services.common.tracing import setup_tracing
from services.gateway.app import create_app
from services.gateway.auth import AuthConfigError


def uvicorn_config(app: FastAPI, settings: Settings, **overrides: object) -> uvicorn.Config:
    """How the gateway is served (also what the tests serve it with).

    httptools (llhttp in its strict mode) is the HTTP/1.1 parser: it refuses a header line ended by
    a bare LF or containing a bare CR, which h11 accepts as a line break (`X-User-ID: ali\\nX-Evil: 1`
    would be two headers), and conflicting Content-Length / Transfer-Encoding framing. Named
    explicitly: "auto" would quietly fall back to h11 if httptools were missing."""
    options: dict[str, object] = {
        "host": settings.http_host,
        "port": settings.http_port,
        "http": "httptools",
        "loop": "uvloop",  # as every service: services/common/runtime.py
        "log_config": None,
        "access_log": False,  # the gateway writes its own JSON access line
        "timeout_graceful_shutdown": int(settings.shutdown_grace_seconds),
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]


def main() -> None:
    settings = Settings()
    setup_logging("gateway", settings.log_level)
    setup_tracing("gateway")
    try:
        app = create_app(settings)
    except AuthConfigError as exc:
        raise SystemExit(f"gateway not started: {exc}") from None
    runtime.settle()
    uvicorn.Server(uvicorn_config(app, settings)).run()


if __name__ == "__main__":
    main()
