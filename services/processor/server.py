"""Processor replica: `python -m services.processor.server`.

Serves ProcessorService over gRPC and works on tasks from JetStream until SIGTERM, then drains.
"""

from __future__ import annotations

import asyncio
import logging

from services.common import grpc_client, messaging, runtime, tracing
from services.common.config import Settings
from services.common.gen.radiology.v1 import processor_pb2_grpc
from services.common.grpc_server import create_server, run_server
from services.common.logging import setup_logging
from services.common.storage_client import StorageClient
from services.processor.operations import anonymize
from services.processor.pool import ProcessPool
from services.processor.scratch import process_tmp_dir
from services.processor.service import SERVICE_NAME, ProcessorService
from services.processor.worker import Worker, subscribe

log = logging.getLogger("services.processor.server")


async def main() -> None:
    settings = Settings()
    setup_logging("processor", settings.log_level)
    tracing.setup_tracing("processor")
    problem = anonymize.secret_problem(settings.anonymize_secret)
    if problem is not None:  # said once here; each anonymize task then fails with the same words
        log.error("anonymize tasks will fail: %s", problem)

    nc = await messaging.connect_service(settings, "processor")
    js = nc.jetstream()
    await messaging.wait_for_streams(js)  # the jobs service creates them ...
    sub = await subscribe(js)  # ... and the durable consumer: waits for it

    storage_channel = grpc_client.channel(settings.storage_addr, settings.grpc_load_balancing)
    storage = StorageClient(storage_channel, settings.rpc_timeout_seconds)
    pool = ProcessPool(settings.workers, memory_budget=settings.task_memory_bytes)
    await pool.start()
    worker = Worker(settings=settings, nc=nc, sub=sub, storage=storage, pool=pool)

    server = create_server()
    processor_pb2_grpc.add_ProcessorServiceServicer_to_server(
        ProcessorService(storage=storage, pool=pool, tmp_root=process_tmp_dir(settings.data_dir)), server
    )

    async def stop() -> None:
        await nc.close()  # flushes pending acks first
        await storage_channel.close()
        await asyncio.to_thread(pool.shutdown, worker.handed_back > 0)

    async def ready() -> str | None:
        if not nc.is_connected:
            return "NATS is not connected"
        return await worker.consumer_problem()

    await run_server(
        settings=settings, addr=settings.processor_addr, server=server, service_names=[SERVICE_NAME],
        on_start=worker.start, on_drain=worker.drain, on_stop=stop, ready=ready,
    )


if __name__ == "__main__":
    runtime.run(main())
