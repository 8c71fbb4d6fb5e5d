"""Entry point: `python -m services.storage.server` (configured by RADIOLOGY_* variables)."""

from __future__ import annotations

from services.common import runtime
from services.common.config import Settings
from services.common.gen.radiology.v1 import storage_pb2_grpc
from services.common.grpc_server import create_server, run_server
from services.common.logging import setup_logging
from services.common.tracing import setup_tracing
from services.storage.backends import backend_from_url
from services.storage.service import SERVICE_NAME, StorageServicer


async def serve() -> None:
    settings = Settings()
    setup_logging("storage", settings.log_level)
    setup_tracing("storage")
    try:
        backend = backend_from_url(settings)
    except (ValueError, OSError) as exc:  # bad URL, or a folder that cannot be created
        raise SystemExit(f"storage: {exc}") from None
    server = create_server()
    storage_pb2_grpc.add_StorageServiceServicer_to_server(StorageServicer(backend), server)
    await run_server(settings=settings, addr=settings.storage_addr, server=server,
                     service_names=[SERVICE_NAME], on_stop=backend.close, ready=backend.ready)


if __name__ == "__main__":
    runtime.run(serve())
