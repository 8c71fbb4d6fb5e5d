"""Wiring of the jobs service: database, NATS, loops and servicer (used by server.py and tests)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import grpc_client, messaging
from services.common.config import Settings
from services.common.gen.radiology.v1 import jobs_pb2_grpc
from services.common.storage_client import StorageClient
from services.jobs.events import EventConsumer
from services.jobs.janitor import Janitor
from services.jobs.migrate import upgrade
from services.jobs.models import make_engine
from services.jobs.outbox import Outbox
from services.jobs.periodic import Periodic
from services.jobs.publisher import TaskPublisher
from services.jobs.reconciler import Reconciler, problems
from services.jobs.repository import Repository
from services.jobs.retention import Retention
from services.jobs.service import JobService
from services.jobs.watch import WatchHub

log = logging.getLogger(__name__)


@dataclass
class JobsApp:
    engine: AsyncEngine
    nc: NATS
    repo: Repository
    hub: WatchHub
    outbox: Outbox
    consumer: EventConsumer
    janitor: Janitor
    retention: Retention
    storage_channel: grpc.aio.Channel
    servicer: JobService
    reconciler: Reconciler
    reconcile_loop: Periodic

    def register(self, server: grpc.aio.Server) -> None:
        jobs_pb2_grpc.add_JobServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await self.hub.start()
        await self.consumer.start()
        self.outbox.start()
        self.janitor.start()
        self.retention.start()
        self.reconcile_loop.start()

    async def ready(self) -> str | None:
        """What the service needs and cannot reach right now (None: all is well)."""
        if not self.nc.is_connected:
            return "NATS is not connected"
        try:
            await self.repo.ping()
        except Exception as exc:
            return f"the database is unreachable: {type(exc).__name__}"
        return await problems(self.nc.jetstream())

    async def drain(self) -> None:
        """Stop taking events after the batch in hand, and stop the outbox."""
        await asyncio.gather(self.consumer.stop(), self.outbox.stop(), self.janitor.stop(),
                             self.retention.stop(), self.reconcile_loop.stop())

    async def close(self) -> None:
        await self.hub.stop()
        await self.storage_channel.close()
        if not self.nc.is_closed:
            await self.nc.drain()
        await self.repo.close()
        await self.engine.dispose()


async def build(settings: Settings, *, engine: AsyncEngine | None = None) -> JobsApp:
    engine = engine or make_engine(settings.database_url)
    await upgrade(engine)
    nc = await messaging.connect_service(settings, "jobs")
    await messaging.ensure_streams(nc.jetstream(), settings.nats_stream_replicas)
    # The processors' durable: created and kept up to date here only (processors may not change it).
    await messaging.ensure_task_consumer(nc.jetstream(), ack_wait=settings.ack_wait_seconds,
                                         max_deliver=settings.max_deliver)
    repo = Repository(engine)
    hub = WatchHub(nc)
    publisher = TaskPublisher(nc)
    storage_channel = grpc_client.channel(settings.storage_addr, settings.grpc_load_balancing)
    storage = StorageClient(storage_channel, settings.rpc_timeout_seconds)
    outbox = Outbox(repo, publisher, settings.outbox_interval_seconds, settings.max_dispatched_tasks_per_user)
    servicer = JobService(
        settings=settings, repo=repo, nc=nc, publisher=publisher, hub=hub, storage=storage, outbox=outbox
    )
    consumer = EventConsumer(nc, repo, hub, storage, on_finished=outbox.wake)
    reconciler = Reconciler(
        repo=repo, js=nc.jetstream(), publisher=publisher, hub=hub, consumer=consumer,
        stall_seconds=settings.task_stall_seconds, deadline_seconds=settings.task_deadline_seconds,
        task_ack_wait=settings.ack_wait_seconds, task_max_deliver=settings.max_deliver,
        on_finished=outbox.wake, stream_replicas=settings.nats_stream_replicas,
    )
    return JobsApp(
        engine=engine, nc=nc, repo=repo, hub=hub, outbox=outbox, consumer=consumer,
        storage_channel=storage_channel, servicer=servicer,
        janitor=Janitor(repo, storage, settings.janitor_interval_seconds, settings.orphan_grace_seconds),
        retention=Retention(repo, servicer.remove_job, settings.retention_days,
                            settings.retention_interval_seconds),
        reconciler=reconciler,
        reconcile_loop=Periodic("reconciler", reconciler.run_once, settings.reconcile_interval_seconds,
                                at_start=False),
    )
