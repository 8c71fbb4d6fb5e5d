"""In-memory fakes of StorageService, JobService and ProcessorService, served by real grpc.aio servers,
behaving as the protos document (NOT_FOUND for another user's job, RESOURCE_EXHAUSTED over max_size...)."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health, health_pb2_grpc

from services.common.gen.radiology.v1 import (
    common_pb2,
    jobs_pb2,
    jobs_pb2_grpc,
    processor_pb2,
    processor_pb2_grpc,
    storage_pb2,
    storage_pb2_grpc,
)
from services.common.protobuf import from_struct, to_struct
from tests.conftest import free_port

TERMINAL = {common_pb2.STATUS_SUCCESS, common_pb2.STATUS_FAILED, common_pb2.STATUS_CANCELLED}


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


@dataclass
class StoredObject:
    data: bytes
    size: int
    sha256: str
    content_type: str
    modified_at: float = field(default_factory=time.time)

    @property
    def etag(self) -> str:
        return self.sha256[:32]


def _bad_key(key: str) -> bool:
    return (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(seg in ("", "..") for seg in key.split("/"))
    )


class FakeStorage(storage_pb2_grpc.StorageServiceServicer):
    def __init__(self) -> None:
        self.objects: dict[str, StoredObject] = {}
        self.keep_data = True  # False: count and hash only (the memory test streams hundreds of MiB)
        self.puts_started = 0
        self.active_gets = 0
        self.force_max_size = 0  # >0: behave as if every Put header carried this max_size
        self.stall_puts = False  # True: Put never reads its stream (a stuck storage)
        self.fail_delete_prefix = 0  # >0: that many DeletePrefix calls answer UNAVAILABLE

    def reset(self) -> None:
        self.objects.clear()
        self.keep_data = True
        self.puts_started = 0
        self.force_max_size = 0
        self.stall_puts = False
        self.fail_delete_prefix = 0

    def info(self, key: str) -> storage_pb2.ObjectInfo:
        o = self.objects[key]
        return storage_pb2.ObjectInfo(
            key=key,
            size=o.size,
            sha256=o.sha256,
            content_type=o.content_type,
            etag=o.etag,
            modified_at=o.modified_at,
        )

    async def Put(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> storage_pb2.ObjectInfo:
        self.puts_started += 1
        if self.stall_puts:
            await asyncio.sleep(3600)
        header = None
        parts: list[bytes] = []
        size = 0
        digest = hashlib.sha256()
        async for req in request_iterator:
            if header is None:
                if not req.HasField("header"):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be the header")
                header = req.header
                if _bad_key(header.key):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid key {header.key!r}")
                continue
            size += len(req.chunk)
            limit = self.force_max_size or header.max_size
            if limit and size > limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "object larger than max_size")
            digest.update(req.chunk)
            if self.keep_data:
                parts.append(req.chunk)
        if header is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no header")
        self.objects[header.key] = StoredObject(
            b"".join(parts), size, digest.hexdigest(), header.content_type
        )
        return self.info(header.key)

    async def Get(self, request: storage_pb2.GetRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.key not in self.objects:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such object")
        obj = self.objects[request.key]
        self.active_gets += 1
        try:
            yield storage_pb2.GetResponse(info=self.info(request.key))
            end = obj.size if not request.length else min(obj.size, request.offset + request.length)
            for pos in range(request.offset, end, 64 * 1024):
                yield storage_pb2.GetResponse(chunk=obj.data[pos : min(end, pos + 64 * 1024)])
        finally:
            self.active_gets -= 1

    async def Stat(self, request: storage_pb2.StatRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.key not in self.objects:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such object")
        return self.info(request.key)

    async def Delete(self, request: storage_pb2.DeleteRequest, context: grpc.aio.ServicerContext) -> Any:
        return storage_pb2.DeleteResponse(deleted=int(self.objects.pop(request.key, None) is not None))

    def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self.objects if k.startswith(prefix)]
        for k in keys:
            del self.objects[k]
        return len(keys)

    async def DeletePrefix(
        self, request: storage_pb2.DeletePrefixRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        if not request.prefix.endswith("/") or _bad_key(request.prefix + "x"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prefix must end with '/'")
        if self.fail_delete_prefix > 0:
            self.fail_delete_prefix -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "storage is restarting")
        return storage_pb2.DeleteResponse(deleted=self.delete_prefix(request.prefix))


class FakeJobs(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, storage: FakeStorage) -> None:
        self.storage = storage
        self.jobs: dict[str, common_pb2.Job] = {}
        self.created: list[jobs_pb2.CreateJobRequest] = []
        self.changed = asyncio.Condition()
        self.active_watches = 0

    def reset(self) -> None:
        self.jobs.clear()
        self.created.clear()

    def _job(self, user_id: str, job_id: str) -> common_pb2.Job | None:
        job = self.jobs.get(job_id)
        return job if job is not None and job.user_id == user_id else None

    async def CreateJob(self, request: jobs_pb2.CreateJobRequest, context: grpc.aio.ServicerContext) -> Any:
        if not request.inputs:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a job needs at least one input")
        self.created.append(request)
        job_id = request.job_id or str(uuid.uuid4())
        now = _now()
        job = common_pb2.Job(
            job_id=job_id,
            user_id=request.user_id,
            status=common_pb2.STATUS_PENDING,
            task_type=request.task_type,
            params=request.params,
            created_at=now,
            updated_at=now,
            message=f"0 of {len(request.inputs)} tasks done",
        )
        for inp in request.inputs:
            job.tasks.append(
                common_pb2.Task(
                    task_id=str(uuid.uuid4()),
                    job_id=job_id,
                    user_id=request.user_id,
                    status=common_pb2.STATUS_PENDING,
                    input_file=inp.filename,
                    input_key=inp.key,
                )
            )
        self.jobs[job_id] = job
        return job

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> Any:
        job = self._job(request.user_id, request.job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id} not found")
        return job

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: grpc.aio.ServicerContext) -> Any:
        mine = [j for j in reversed(list(self.jobs.values())) if j.user_id == request.user_id]
        if request.status:
            mine = [j for j in mine if j.status == request.status]
        try:
            start = int(request.cursor or 0)
        except ValueError:  # as the real service answers a cursor that it did not issue
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid cursor")
        limit = request.limit or 20
        page = mine[start : start + limit]
        nxt = str(start + limit) if start + limit < len(mine) else ""
        return jobs_pb2.ListJobsResponse(jobs=page, next_cursor=nxt)

    async def GetTask(self, request: jobs_pb2.GetTaskRequest, context: grpc.aio.ServicerContext) -> Any:
        for job in self.jobs.values():
            for task in job.tasks:
                if task.task_id == request.task_id and job.user_id == request.user_id:
                    return task
        await context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.task_id} not found")

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.aio.ServicerContext) -> Any:
        job = self._job(request.user_id, request.job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id} not found")
        if job.status not in TERMINAL:
            for t in job.tasks:
                if t.status not in TERMINAL:
                    t.status = common_pb2.STATUS_CANCELLED
            job.status = common_pb2.STATUS_CANCELLED
            await self.notify()
        return job

    async def DeleteJob(self, request: jobs_pb2.DeleteJobRequest, context: grpc.aio.ServicerContext) -> Any:
        job = self._job(request.user_id, request.job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id} not found")
        del self.jobs[request.job_id]
        n = self.storage.delete_prefix(f"{request.user_id}/{request.job_id}/")
        return jobs_pb2.DeleteJobResponse(objects_deleted=n)

    async def WatchJob(self, request: jobs_pb2.WatchJobRequest, context: grpc.aio.ServicerContext) -> Any:
        job = self._job(request.user_id, request.job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id} not found")
        self.active_watches += 1
        try:
            last = job.SerializeToString()
            yield job
            while job.status not in TERMINAL:
                async with self.changed:
                    await self.changed.wait()
                if job.SerializeToString() != last:
                    last = job.SerializeToString()
                    yield job
        finally:
            self.active_watches -= 1

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def update(self, job_id: str, status: int, progress: int, **task_fields: Any) -> None:
        """Test helper: move a job (and all its tasks) to a status, as the real event flow would."""
        job = self.jobs[job_id]
        job.status = status
        job.progress = progress
        job.updated_at.CopyFrom(_now())
        for t in job.tasks:
            t.status = status
            t.progress = progress
            for k, v in task_fields.items():
                if k == "result":
                    t.result.CopyFrom(v)
                else:
                    setattr(t, k, v)
        await self.notify()


OPERATIONS = [
    processor_pb2.Operation(
        name="blur",
        title="Gaussian blur",
        description="Gaussian blur, in 3D for volumes",
        accepts=["2d", "3d", "dicom", "nifti"],
        outputs="PNG for 2D; .nii.gz plus PNG preview for volumes",
        params_schema=to_struct(
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"sigma": {"type": "number", "minimum": 0, "default": 1.0}},
            }
        ),
    ),
    processor_pb2.Operation(
        name="resize",
        title="Resize",
        description="Resample",
        accepts=["2d", "3d"],
        outputs="PNG",
        params_schema=to_struct(
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "width": {"type": "integer", "minimum": 1, "maximum": 8192, "default": 512},
                    "height": {"type": "integer", "minimum": 1, "maximum": 8192, "default": 512},
                    "shape": {
                        "anyOf": [
                            {"type": "null"},
                            {
                                "type": "array",
                                "items": {"type": "integer", "minimum": 1, "maximum": 4096},
                                "minItems": 3,
                                "maxItems": 3,
                            },
                        ],
                        "default": None,
                    },
                },
            }
        ),
    ),
]


class FakeProcessor(processor_pb2_grpc.ProcessorServiceServicer):
    def __init__(self) -> None:
        self.list_calls = 0
        self.validate_calls = 0
        self.last_metadata: dict[str, Any] = {}
        self.validated: list[tuple[str, dict[str, Any]]] = []
        self.down = False  # True: every call answers UNAVAILABLE, as while processors restart

    def reset(self) -> None:
        self.list_calls = 0
        self.validate_calls = 0
        self.validated.clear()
        self.down = False

    async def ListOperations(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.list_calls += 1
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no processor")
        self.last_metadata = dict(context.invocation_metadata() or ())
        return processor_pb2.ListOperationsResponse(operations=OPERATIONS)

    async def ValidateParams(self, request: processor_pb2.ValidateParamsRequest, context: Any) -> Any:
        self.validate_calls += 1
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no processor")
        ops = {op.name: from_struct(op.params_schema) for op in OPERATIONS}
        if request.task_type not in ops:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown operation '{request.task_type}'")
        params = from_struct(request.params)
        props = ops[request.task_type]["properties"]
        out = {}
        for name, value in params.items():
            if name not in props:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"unknown parameter '{name}' for {request.task_type}"
                )
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or value < props[name].get("minimum", 0)
            ):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name} must be a number >= 0")
            out[name] = value
        for name, prop in props.items():
            out.setdefault(name, prop["default"])
        self.validated.append((request.task_type, out))
        return processor_pb2.ValidateParamsResponse(params=to_struct(out))


@dataclass
class Backend:
    servicer: Any
    server: grpc.aio.Server
    addr: str


async def serve(servicer: Any, add: Any) -> Backend:
    server = grpc.aio.server()
    add(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return Backend(servicer, server, f"127.0.0.1:{port}")


@dataclass
class Fakes:
    storage: FakeStorage
    jobs: FakeJobs
    processor: FakeProcessor
    backends: list[Backend]

    @property
    def addrs(self) -> dict[str, str]:
        return {name: b.addr for name, b in zip(("storage", "jobs", "processor"), self.backends, strict=True)}

    def reset(self) -> None:
        self.storage.reset()
        self.jobs.reset()
        self.processor.reset()


async def start_fakes() -> Fakes:
    storage = FakeStorage()
    jobs = FakeJobs(storage)
    processor = FakeProcessor()
    backends = [
        await serve(storage, storage_pb2_grpc.add_StorageServiceServicer_to_server),
        await serve(jobs, jobs_pb2_grpc.add_JobServiceServicer_to_server),
        await serve(processor, processor_pb2_grpc.add_ProcessorServiceServicer_to_server),
    ]
    return Fakes(storage, jobs, processor, backends)


def result_for(job: common_pb2.Job, task: common_pb2.Task) -> common_pb2.TaskResult:
    out = task.input_file.rsplit(".", 1)[0] + "_processed.png"
    return common_pb2.TaskResult(
        input_file=task.input_file,
        output_file=out,
        task_type=job.task_type,
        outputs=[
            common_pb2.Output(
                filename=out,
                key=f"{job.user_id}/{job.job_id}/{out}",
                media_type="image/png",
                size=3,
                sha256="ab" * 32,
                role="primary",
            )
        ],
        metadata=to_struct({"format": "png", "shape": [2, 3], "spacing": [0.5, 0.5]}),
    )
