"""Fixtures for the processor tests: a fresh nats-server per test, an in-memory StorageService
(a real grpc.aio server that can be stopped to simulate an outage), a shared process pool, and a
harness that runs Workers and collects the TaskEvents they publish."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import nats
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2_grpc
from nats.aio.client import Client as NATS
from PIL import Image

from services.common import messaging
from services.common.config import Settings
from services.common.gen.radiology.v1 import common_pb2, storage_pb2, storage_pb2_grpc, tasks_pb2
from services.common.protobuf import to_struct
from services.common.storage_client import CHUNK_SIZE, StorageClient
from services.processor.pool import ProcessPool
from services.processor.worker import Worker, subscribe
from tests.conftest import NatsServer, free_port

# The key of anonymize's UID replacement, as every deployment sets it for the processors (test
# value); tests of a processor without it remove it themselves.
ANONYMIZE_SECRET = "test-anonymize-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def anonymize_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RADIOLOGY_ANONYMIZE_SECRET", ANONYMIZE_SECRET)
    return ANONYMIZE_SECRET


# --- fake storage -------------------------------------------------------------------------------


class FakeStorage(storage_pb2_grpc.StorageServiceServicer):
    """StorageService over a dict. `fail_gets = n` makes the next n Gets fail with `fail_code`
    (UNAVAILABLE unless set)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.puts: list[str] = []
        self.get_times: list[float] = []
        self.fail_gets = 0
        self.fail_code = grpc.StatusCode.UNAVAILABLE
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self._server = grpc.aio.server()
        storage_pb2_grpc.add_StorageServiceServicer_to_server(self, self._server)
        health_servicer = health.aio.HealthServicer()  # SERVING for "" by default
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self._server)
        self._server.add_insecure_port(self.addr)
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    def info(self, key: str) -> storage_pb2.ObjectInfo:
        data, content_type = self.objects[key]
        return storage_pb2.ObjectInfo(
            key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest(), content_type=content_type
        )

    async def Put(self, request_iterator, context):  # noqa: N802
        header = None
        buf = bytearray()
        async for req in request_iterator:
            if req.HasField("header"):
                header = req.header
            else:
                assert len(req.chunk) <= CHUNK_SIZE
                buf += req.chunk
        assert header is not None
        if header.if_absent and header.key in self.objects:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{header.key} exists")
        self.objects[header.key] = (bytes(buf), header.content_type)
        self.puts.append(header.key)
        return self.info(header.key)

    async def Stat(self, request, context):  # noqa: N802
        if request.key not in self.objects:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no object {request.key}")
        return self.info(request.key)

    async def Get(self, request, context):  # noqa: N802
        self.get_times.append(time.monotonic())
        if self.fail_gets:
            self.fail_gets -= 1
            await context.abort(self.fail_code, "storage is restarting")
        if request.key not in self.objects:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no object {request.key}")
        data = self.objects[request.key][0]
        yield storage_pb2.GetResponse(info=self.info(request.key))
        for i in range(0, len(data), CHUNK_SIZE):
            yield storage_pb2.GetResponse(chunk=data[i : i + CHUNK_SIZE])


@pytest.fixture
async def storage() -> AsyncIterator[FakeStorage]:
    fake = FakeStorage()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def nats_srv(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of its own: the stream names are fixed, so tests must not share one."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def pool() -> AsyncIterator[ProcessPool]:
    p = ProcessPool(2)
    await p.start()
    yield p
    await asyncio.to_thread(p.shutdown)


# --- images -------------------------------------------------------------------------------------


def png_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width, dtype=np.float64)[None, :].repeat(height, 0)
    pixels = np.clip(ramp + rng.normal(0, 25, (height, width)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def slow_png(size: int = 3000) -> bytes:
    """A small file that is slow to blur with a large sigma (about 1.5 s at 3000, sigma 40)."""
    y, x = np.mgrid[0:size, 0:size]
    out = io.BytesIO()
    Image.fromarray(((x + y) % 256).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


SLOW = {"sigma": 40}

CORRUPT_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"garbage" * 20


# --- harness ------------------------------------------------------------------------------------


@dataclass
class Seen:
    event: tasks_pb2.TaskEvent
    headers: dict[str, str]
    at: float


@dataclass
class Harness:
    nats_server: NatsServer
    storage: FakeStorage
    pool: ProcessPool
    data_dir: Path
    nc: NATS | None = None
    events: list[Seen] = field(default_factory=list)
    workers: list[tuple[Worker, NATS, grpc.aio.Channel]] = field(default_factory=list)
    _collector: asyncio.Task[None] | None = None
    _closing: bool = False

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = dict(
            nats_url=self.nats_server.url,
            storage_addr=self.storage.addr,
            data_dir=str(self.data_dir),
            workers=2,
            concurrency=2,
            ack_wait_seconds=10.0,
            retry_backoff_seconds=0.2,
            retry_backoff_max_seconds=1.0,
            storage_probe_seconds=0.2,
            rpc_timeout_seconds=2.0,
        )
        values.update(overrides)
        return Settings(**values)

    async def open(self) -> None:
        self.nc = await nats.connect(self.nats_server.url)
        js = self.nc.jetstream()
        await messaging.ensure_streams(js)
        config = messaging.consumer_config(
            "test-events", messaging.EVENTS_SUBJECT, ack_wait=30, max_deliver=1
        )
        sub = await js.pull_subscribe(
            f"{messaging.EVENTS_SUBJECT}.>",
            durable="test-events",
            stream=messaging.EVENTS_STREAM,
            config=config,
        )
        self._collector = asyncio.create_task(self._collect(sub))

    async def _collect(self, sub) -> None:
        # Stopped by a flag, not only by cancel(): on Python 3.11 asyncio.wait_for (inside nats-py's
        # fetch) swallows a cancellation that arrives as its result does, and a loop that relied on
        # the cancel then ran forever and hung the fixture's teardown.
        while not self._closing:
            try:
                msgs = await sub.fetch(1, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                event = tasks_pb2.TaskEvent.FromString(msg.data)
                self.events.append(Seen(event, dict(msg.headers or {}), time.monotonic()))
                await msg.ack()

    async def worker(
        self, drain_grace: float | None = None, queue_depth_interval: float = 5.0, **overrides: object
    ) -> Worker:
        settings = self.settings(**overrides)
        assert self.nc is not None  # as the jobs service: the durable with this worker's settings
        await messaging.ensure_task_consumer(self.nc.jetstream(), ack_wait=settings.ack_wait_seconds,
                                             max_deliver=settings.max_deliver)
        nc = await messaging.connect_service(settings, "processor-test")
        sub = await subscribe(nc.jetstream())
        channel = grpc.aio.insecure_channel(settings.storage_addr)
        storage = StorageClient(channel, settings.rpc_timeout_seconds)
        w = Worker(
            settings=settings,
            nc=nc,
            sub=sub,
            storage=storage,
            pool=self.pool,
            drain_grace=drain_grace,
            queue_depth_interval=queue_depth_interval,
        )
        await w.start()
        self.workers.append((w, nc, channel))
        return w

    async def publish_task(
        self,
        data: bytes | None,
        *,
        task_type: str = "blur",
        params: dict | None = None,
        job_id: str | None = None,
        input_file: str = "scan.png",
        headers: dict[str, str] | None = None,
        dispatched_at: float = 0.0,
    ) -> tasks_pb2.TaskMessage:
        assert self.nc is not None
        task = tasks_pb2.TaskMessage(
            task_id=str(uuid.uuid4()),
            job_id=job_id or str(uuid.uuid4()),
            user_id="alice",
            task_type=task_type,
            params=to_struct(params or {}),
            input_file=input_file,
            output_stem=Path(input_file).name.split(".")[0],
            dispatched_at=dispatched_at or time.time(),
        )
        task.input_key = f"{task.user_id}/{task.job_id}/{input_file}"
        if data is not None:
            self.storage.objects[task.input_key] = (data, "image/png")
        await self.nc.jetstream().publish(
            messaging.task_subject(task_type, task.job_id, task.task_id),
            task.SerializeToString(),
            headers={"Nats-Msg-Id": task.task_id, **(headers or {})},
        )
        return task

    async def republish(self, task: tasks_pb2.TaskMessage) -> None:
        """The same task again under a fresh Nats-Msg-Id (as the jobs service's reconciler does)."""
        assert self.nc is not None
        await self.nc.jetstream().publish(
            messaging.task_subject(task.task_type, task.job_id, task.task_id),
            task.SerializeToString(), headers={"Nats-Msg-Id": f"{task.task_id}:r{time.time()}"},
        )

    def events_of(self, task_id: str) -> list[tasks_pb2.TaskEvent]:
        return [s.event for s in self.events if s.event.task_id == task_id]

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events: {[_short(s.event) for s in self.events]}")
            await asyncio.sleep(0.02)

    async def wait_terminal(self, task_id: str, timeout: float = 20.0) -> tasks_pb2.TaskEvent:
        terminal = (common_pb2.STATUS_SUCCESS, common_pb2.STATUS_FAILED)
        await self.wait_for(lambda: any(e.status in terminal for e in self.events_of(task_id)), timeout)
        return next(e for e in self.events_of(task_id) if e.status in terminal)

    async def consumer(self):
        assert self.nc is not None
        return await self.nc.jetstream().consumer_info(messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE)

    async def close(self) -> None:
        for w, nc, channel in self.workers:
            await w.drain()
            await nc.close()
            await channel.close()
        if self._collector:
            self._closing = True
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        if self.nc:
            await self.nc.close()


def _short(e: tasks_pb2.TaskEvent) -> str:
    return f"{e.task_id[:8]}:{common_pb2.Status.Name(e.status)}:{e.progress}:{e.message}"


@pytest.fixture
async def harness(
    nats_srv: NatsServer, storage: FakeStorage, pool: ProcessPool, tmp_path: Path
) -> AsyncIterator[Harness]:
    h = Harness(nats_srv, storage, pool, tmp_path / "data")
    await h.open()
    yield h
    await h.close()
