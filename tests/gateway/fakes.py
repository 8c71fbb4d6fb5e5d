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
import jsonschema
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
from services.common.keys import job_prefix, object_key
from services.common.protobuf import from_struct_plain, to_struct
from services.common.refusals import limit_trailer
from services.common.status import TERMINAL
from tests.conftest import free_port
from tests.gateway import catalogue_fixture


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


class Failures:
    """Lets a test make the next calls of one method fail with a given status: `fail["GetJob"] =
    grpc.StatusCode.INTERNAL`. Each method calls `check` first."""

    def __init__(self) -> None:
        self.fail: dict[str, grpc.StatusCode] = {}

    def reset(self) -> None:
        self.fail.clear()

    async def check(self, method: str, context: grpc.aio.ServicerContext) -> None:
        code = self.fail.get(method)
        if code is not None:
            await context.abort(code, f"{method} failed as the test asked ({code.name})")


def _bad_key(key: str) -> bool:
    return (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(seg in ("", "..") for seg in key.split("/"))
    )


class FakeStorage(Failures, storage_pb2_grpc.StorageServiceServicer):
    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[str, StoredObject] = {}
        self.keep_data = True  # False: count and hash only (the memory test streams hundreds of MiB)
        self.puts_started = 0
        self.active_gets = 0
        self.force_max_size = 0  # >0: behave as if every Put header carried this max_size
        self.stall_puts = False  # True: Put never reads its stream (a stuck storage)
        self.fail_delete_prefix = 0  # >0: that many DeletePrefix calls answer UNAVAILABLE

    def reset(self) -> None:
        super().reset()
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
        await self.check("Put", context)
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
        await self.check("Get", context)
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
        await self.check("Stat", context)
        if request.key not in self.objects:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such object")
        return self.info(request.key)

    async def Delete(self, request: storage_pb2.DeleteRequest, context: grpc.aio.ServicerContext) -> Any:
        await self.check("Delete", context)
        return storage_pb2.DeleteResponse(deleted=int(self.objects.pop(request.key, None) is not None))

    def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self.objects if k.startswith(prefix)]
        for k in keys:
            del self.objects[k]
        return len(keys)

    async def DeletePrefix(
        self, request: storage_pb2.DeletePrefixRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        await self.check("DeletePrefix", context)
        if not request.prefix.endswith("/") or _bad_key(request.prefix + "x"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prefix must end with '/'")
        if self.fail_delete_prefix > 0:
            self.fail_delete_prefix -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "storage is restarting")
        return storage_pb2.DeleteResponse(deleted=self.delete_prefix(request.prefix))


class FakeJobs(Failures, jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, storage: FakeStorage) -> None:
        super().__init__()
        self.storage = storage
        self.jobs: dict[str, common_pb2.Job] = {}
        self.created: list[jobs_pb2.CreateJobRequest] = []
        self.changed = asyncio.Condition()
        self.active_watches = 0
        self.admitted: list[str] = []
        # What AdmitSubmission answers: refuse with this LimitExceeded, or admit with this quota left.
        self.refusal: jobs_pb2.LimitExceeded | None = None
        self.remaining_bytes = -1
        self.keys: dict[tuple[str, str], str] = {}  # (user, idempotency key) -> job id
        # Set: CreateJob records the job, then answers with this status (it died after committing).
        self.fail_after_commit: grpc.StatusCode | None = None
        # Failures that start with the next CreateJob (the service dies as it is called).
        self.fail_from_create: dict[str, grpc.StatusCode] = {}

    def reset(self) -> None:
        super().reset()
        self.jobs.clear()
        self.created.clear()
        self.admitted.clear()
        self.refusal = None
        self.remaining_bytes = -1
        self.keys.clear()
        self.fail_after_commit = None
        self.fail_from_create = {}

    def usage(self, user_id: str) -> jobs_pb2.Usage:
        mine = [j for j in self.jobs.values() if j.user_id == user_id]
        return jobs_pb2.Usage(
            user_id=user_id, active_jobs=sum(j.status not in TERMINAL for j in mine),
            stored_bytes=sum(i.size for r in self.created if r.user_id == user_id for i in r.inputs),
            limits=jobs_pb2.UsageLimits(submissions_per_minute=60, submission_burst=10, max_active_jobs=5,
                                        max_stored_bytes=max(self.remaining_bytes, 0)),
            submissions_available=10 - len(self.admitted),
        )

    async def AdmitSubmission(self, request: jobs_pb2.AdmitSubmissionRequest, context: Any) -> Any:
        await self.check("AdmitSubmission", context)
        if self.refusal is not None:
            context.set_trailing_metadata(limit_trailer(self.refusal))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "limit reached as the test asked")
        self.admitted.append(request.user_id)
        return jobs_pb2.Admission(usage=self.usage(request.user_id), remaining_bytes=self.remaining_bytes)

    async def GetUsage(self, request: jobs_pb2.GetUsageRequest, context: Any) -> Any:
        await self.check("GetUsage", context)
        return self.usage(request.user_id)

    async def _job(self, request: Any, context: grpc.aio.ServicerContext) -> common_pb2.Job:
        """The caller's job, or NOT_FOUND (also for another user's)."""
        job = self.jobs.get(request.job_id)
        if job is None or job.user_id != request.user_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id} not found")
        return job

    async def CreateJob(self, request: jobs_pb2.CreateJobRequest, context: grpc.aio.ServicerContext) -> Any:
        self.fail.update(self.fail_from_create)
        await self.check("CreateJob", context)
        if not request.inputs:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a job needs at least one input")
        owner = self.keys.get((request.user_id, request.idempotency_key))
        if request.idempotency_key and owner in self.jobs:
            return self.jobs[owner]
        self.created.append(request)
        job_id = request.job_id or str(uuid.uuid4())
        if request.idempotency_key:
            self.keys[(request.user_id, request.idempotency_key)] = job_id
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
        if self.fail_after_commit is not None:
            await context.abort(self.fail_after_commit, "the service died after committing")
        return job

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> Any:
        await self.check("GetJob", context)
        if not request.job_id and request.idempotency_key:
            owner = self.keys.get((request.user_id, request.idempotency_key), "")
            if owner not in self.jobs:
                await context.abort(grpc.StatusCode.NOT_FOUND, "no job has this key")
            return self.jobs[owner]
        job = await self._job(request, context)
        return job

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: grpc.aio.ServicerContext) -> Any:
        await self.check("ListJobs", context)
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
        await self.check("GetTask", context)
        for job in self.jobs.values():
            for task in job.tasks:
                if task.task_id == request.task_id and job.user_id == request.user_id:
                    return task
        await context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.task_id} not found")

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.aio.ServicerContext) -> Any:
        await self.check("CancelJob", context)
        job = await self._job(request, context)
        if job.status not in TERMINAL:
            for t in job.tasks:
                if t.status not in TERMINAL:
                    t.status = common_pb2.STATUS_CANCELLED
            job.status = common_pb2.STATUS_CANCELLED
            await self.notify()
        return job

    async def DeleteJob(self, request: jobs_pb2.DeleteJobRequest, context: grpc.aio.ServicerContext) -> Any:
        await self.check("DeleteJob", context)
        await self._job(request, context)
        del self.jobs[request.job_id]
        n = self.storage.delete_prefix(job_prefix(request.user_id, request.job_id))
        return jobs_pb2.DeleteJobResponse(objects_deleted=n)

    async def WatchJob(self, request: jobs_pb2.WatchJobRequest, context: grpc.aio.ServicerContext) -> Any:
        await self.check("WatchJob", context)
        job = await self._job(request, context)
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


# The real catalogue, from a fixture generated from the processor (tests/gateway/catalogue_fixture.py).
OPERATIONS = [
    processor_pb2.Operation(
        name=op["name"], title=op["title"], description=op["description"], accepts=op["accepts"],
        params_schema=to_struct(op["params_schema"]), outputs=op["outputs"],
    )
    for op in catalogue_fixture.load()
]
_VALIDATORS = {
    op["name"]: (jsonschema.Draft202012Validator(op["params_schema"]), op["params_schema"])
    for op in catalogue_fixture.load()
}


class FakeProcessor(Failures, processor_pb2_grpc.ProcessorServiceServicer):
    """Serves the real catalogue; validates params against its schemas and fills in defaults (the
    real service also runs each operation's own extra checks)."""

    def __init__(self) -> None:
        super().__init__()
        self.list_calls = 0
        self.validate_calls = 0
        self.last_metadata: dict[str, Any] = {}
        self.validated: list[tuple[str, dict[str, Any]]] = []
        self.refusals: list[str] = []  # the messages of refused params, as sent
        self.down = False  # True: every call answers UNAVAILABLE, as while processors restart
        self.hang = False  # True: catalogue calls never answer, as from a frozen (SIGSTOP) processor
        # Inspect's answer for stored files whose name ends so; other files: INVALID_ARGUMENT
        self.inspections: dict[str, dict[str, Any]] = {}
        self.inspected: list[str] = []

    def reset(self) -> None:
        super().reset()
        self.list_calls = 0
        self.validate_calls = 0
        self.validated.clear()
        self.refusals.clear()
        self.down = False
        self.hang = False
        self.inspections.clear()
        self.inspected.clear()

    async def Inspect(self, request: processor_pb2.InspectRequest, context: Any) -> Any:
        self.inspected.append(request.key)
        await self.check("Inspect", context)
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no processor")
        for ending, metadata in self.inspections.items():
            if request.key.endswith(ending):
                return processor_pb2.InspectResponse(format="zip", metadata=to_struct(metadata))
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a readable image")

    async def ListOperations(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.list_calls += 1
        await self.check("ListOperations", context)
        while self.hang:
            await asyncio.sleep(0.05)
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no processor")
        self.last_metadata = dict(context.invocation_metadata() or ())
        return processor_pb2.ListOperationsResponse(operations=OPERATIONS)

    async def ValidateParams(self, request: processor_pb2.ValidateParamsRequest, context: Any) -> Any:
        self.validate_calls += 1
        await self.check("ValidateParams", context)
        while self.hang:
            await asyncio.sleep(0.05)
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no processor")
        if request.task_type not in _VALIDATORS:
            await self.refuse(context, f"unknown operation '{request.task_type}'")
        validator, schema = _VALIDATORS[request.task_type]
        params = from_struct_plain(request.params)
        for error in validator.iter_errors(params):
            where = ".".join(str(p) for p in error.absolute_path) or "params"
            await self.refuse(context, f"{where}: {error.message}")
        for name, prop in schema["properties"].items():
            if "default" in prop:
                params.setdefault(name, prop["default"])
        self.validated.append((request.task_type, params))
        return processor_pb2.ValidateParamsResponse(params=to_struct(params))

    async def refuse(self, context: grpc.aio.ServicerContext, message: str) -> None:
        self.refusals.append(message)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


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
                key=object_key(job.user_id, job.job_id, out),
                media_type="image/png",
                size=3,
                sha256="ab" * 32,
                role="primary",
            )
        ],
        metadata=to_struct({"format": "png", "shape": [2, 3], "spacing": [0.5, 0.5]}),
    )
