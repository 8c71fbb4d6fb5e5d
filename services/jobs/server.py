"""Entry point: `python -m services.jobs.server`."""

from __future__ import annotations

from services.common import runtime
from services.common.config import Settings
from services.common.gen.radiology.v1 import jobs_pb2
from services.common.grpc_server import create_server, run_server
from services.common.logging import setup_logging
from services.common.tracing import setup_tracing
from services.jobs.app import build


async def main() -> None:
    settings = Settings()
    setup_logging("jobs", settings.log_level)
    setup_tracing("jobs")
    app = await build(settings)
    server = create_server()
    app.register(server)
    await run_server(
        settings=settings,
        addr=settings.jobs_addr,
        server=server,
        service_names=[jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name],
        on_start=app.start,
        on_drain=app.drain,
        on_stop=app.close,
        ready=app.ready,
    )


if __name__ == "__main__":
    runtime.run(main())
