"""Helpers of the jobs service tests: a fake StorageService and a jobs service started in-process
on a free port (the same wiring as `python -m services.jobs.server`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import nats
from nats.aio.client import Client as NATS

from services.common.config import Settings
from services.common.gen.radiology.v1 import jobs_pb2_grpc, storage_pb2, storage_pb2_grpc
from services.common.grpc_server import create_server
from services.jobs.app import JobsApp, build


class FakeStorage(storage_pb2_grpc.StorageServiceServicer):
    """Only DeletePrefix, Delete and List, recording what it was asked."""

    def __init__(self) -> None:
        self.prefixes: list[str] = []
        self.keys: list[str] = []
        self.deleted = 3
        self.listing: list[storage_pb2.ObjectInfo] = []  # what List pages through, two at a time

    async def List(self, request: storage_pb2.ListRequest, context: Any):
        start = int(request.page_token or 0)
        page = self.listing[start : start + 2]
        more = start + 2 < len(self.listing)
        return storage_pb2.ListResponse(objects=page, next_page_token=str(start + 2) if more else "")

    async def DeletePrefix(self, request: storage_pb2.DeletePrefixRequest, context: Any):
        self.prefixes.append(request.prefix)
        return storage_pb2.DeleteResponse(deleted=self.deleted)

    async def Delete(self, request: storage_pb2.DeleteRequest, context: Any):
        self.keys.append(request.key)
        return storage_pb2.DeleteResponse(deleted=1)


@dataclass
class StorageServer:
    addr: str
    servicer: FakeStorage
    server: grpc.aio.Server


@dataclass
class Running:
    app: JobsApp
    stub: jobs_pb2_grpc.JobServiceStub
    nc: NATS  # a test client, separate from the service's
    settings: Settings
    _closers: list[Any] = field(default_factory=list)

    @property
    def js(self):  # noqa: ANN201 - nats-py JetStreamContext
        return self.nc.jetstream()


async def start_jobs(nats_url: str, storage_addr: str, db_path: Path, **overrides: Any) -> Running:
    settings = Settings(**{
        "nats_url": nats_url,
        "database_url": f"sqlite+aiosqlite:///{db_path}",
        "storage_addr": storage_addr,
        "outbox_interval_seconds": 0.3,
        "rpc_timeout_seconds": 2.0,
        **overrides,
    })
    app = await build(settings)
    await app.start()
    server = create_server()
    app.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    nc = await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    running = Running(app, jobs_pb2_grpc.JobServiceStub(channel), nc, settings)

    async def close() -> None:
        await nc.close()
        await channel.close()
        await server.stop(0)
        await app.drain()
        await app.close()

    running._closers.append(close)
    return running
