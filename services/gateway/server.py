"""Entry point: `python -m services.gateway.server` (configured by RADIOLOGY_* variables)."""

from __future__ import annotations

import uvicorn

from services.common.config import Settings
from services.common.logging import setup_logging
from services.common.tracing import setup_tracing
from services.gateway.app import create_app


def main() -> None:
    settings = Settings()
    setup_logging("gateway", settings.log_level)
    setup_tracing("gateway")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,  # the gateway writes its own JSON access line
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
