"""Typed clients of the backing services: one method per RPC, each with the deadline, the
trace/request-id metadata and the error mapping (errors.FROM_GRPC) inside, so a failed call is
already the ApiError it means. StorageService is the shared client of services/common, whose
errors the gateway maps where it calls it (errors.rpc_errors)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import grpc

from services.common.config import Settings
from services.common.gen.radiology.v1 import (
    common_pb2,
    jobs_pb2,
    jobs_pb2_grpc,
    processor_pb2,
    processor_pb2_grpc,
)
from services.common.grpc_client import call_metadata, channel
from services.common.protobuf import from_struct, from_struct_plain, to_struct
from services.common.storage_client import StorageClient
from services.gateway.errors import from_grpc, rpc_errors

log = logging.getLogger(__name__)


class _Unary:
    """Unary calls of one service's stub, with the deadline, metadata and error mapping."""

    service = ""

    def __init__(self, stub: Any, timeout: float) -> None:
        self._stub = stub
        self.timeout = timeout

    async def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        with rpc_errors(self.service, method):
            return await getattr(self._stub, method)(
                request, timeout=timeout or self.timeout, metadata=call_metadata()
            )


class JobWatch:
    """The rest of a WatchJob stream after its first message. `next()` is the job's next state, or
    None once the stream has ended; it can be awaited with a timeout (a background task reads the
    call). `close()` ends the call."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._queue: asyncio.Queue[common_pb2.Job | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while (job := await self._call.read()) is not grpc.aio.EOF:
                await self._queue.put(job)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                log.warning("job watch ended: %s %s", exc.code().name, exc.details())
        finally:
            await self._queue.put(None)

    async def next(self) -> common_pb2.Job | None:
        return await self._queue.get()

    def close(self) -> None:
        self._call.cancel()
        self._reader.cancel()


class JobsClient(_Unary):
    service = "jobs"

    def __init__(self, ch: grpc.aio.Channel, timeout: float) -> None:
        super().__init__(jobs_pb2_grpc.JobServiceStub(ch), timeout)

    async def create_job(
        self, *, job_id: str, user_id: str, task_type: str, params: dict[str, Any],
        inputs: Sequence[jobs_pb2.JobInput], idempotency_key: str = "",
    ) -> common_pb2.Job:
        request = jobs_pb2.CreateJobRequest(
            job_id=job_id, user_id=user_id, task_type=task_type, params=to_struct(params), inputs=inputs,
            idempotency_key=idempotency_key,
        )
        return await self._call("CreateJob", request)

    async def get_job(self, user_id: str, job_id: str, timeout: float | None = None) -> common_pb2.Job:
        return await self._call("GetJob", jobs_pb2.GetJobRequest(user_id=user_id, job_id=job_id), timeout)

    async def get_job_by_key(
        self, user_id: str, idempotency_key: str, timeout: float | None = None
    ) -> common_pb2.Job:
        request = jobs_pb2.GetJobRequest(user_id=user_id, idempotency_key=idempotency_key)
        return await self._call("GetJob", request, timeout)

    async def list_jobs(
        self, user_id: str, status: int, limit: int, cursor: str
    ) -> jobs_pb2.ListJobsResponse:
        request = jobs_pb2.ListJobsRequest(user_id=user_id, status=status, limit=limit, cursor=cursor)
        return await self._call("ListJobs", request)

    async def get_task(self, user_id: str, task_id: str) -> common_pb2.Task:
        return await self._call("GetTask", jobs_pb2.GetTaskRequest(user_id=user_id, task_id=task_id))

    async def cancel_job(self, user_id: str, job_id: str) -> common_pb2.Job:
        return await self._call("CancelJob", jobs_pb2.CancelJobRequest(user_id=user_id, job_id=job_id))

    async def delete_job(self, user_id: str, job_id: str) -> jobs_pb2.DeleteJobResponse:
        return await self._call("DeleteJob", jobs_pb2.DeleteJobRequest(user_id=user_id, job_id=job_id))

    async def admit_submission(self, user_id: str) -> jobs_pb2.Admission:
        return await self._call("AdmitSubmission", jobs_pb2.AdmitSubmissionRequest(user_id=user_id))

    async def get_usage(self, user_id: str) -> jobs_pb2.Usage:
        return await self._call("GetUsage", jobs_pb2.GetUsageRequest(user_id=user_id))

    async def watch_job(self, user_id: str, job_id: str) -> tuple[common_pb2.Job, JobWatch]:
        """The job now (waited for within the deadline, so a missing job or a down service is an
        ApiError before anything is streamed) and the watch of its later states."""
        call = self._stub.WatchJob(
            jobs_pb2.WatchJobRequest(user_id=user_id, job_id=job_id), metadata=call_metadata()
        )
        try:
            with rpc_errors(self.service, "WatchJob"):
                first = await asyncio.wait_for(call.read(), self.timeout)
        except TimeoutError:
            call.cancel()
            raise from_grpc(self.service, "WatchJob", grpc.StatusCode.DEADLINE_EXCEEDED, "") from None
        except BaseException:
            call.cancel()
            raise
        if first is grpc.aio.EOF:  # the stream ended without the job: there is none
            raise from_grpc(self.service, "WatchJob", grpc.StatusCode.NOT_FOUND, "no job")
        return first, JobWatch(call)


class ProcessorClient(_Unary):
    service = "processor"

    def __init__(self, ch: grpc.aio.Channel, timeout: float) -> None:
        super().__init__(processor_pb2_grpc.ProcessorServiceStub(ch), timeout)

    async def list_operations(self, timeout: float | None = None) -> Sequence[processor_pb2.Operation]:
        response = await self._call("ListOperations", processor_pb2.ListOperationsRequest(), timeout)
        return response.operations

    async def validate_params(
        self, task_type: str, params: dict[str, Any] | None, timeout: float | None = None
    ) -> dict[str, Any]:
        """The params with defaults filled in; ApiError invalid_params when the processor refuses them."""
        request = processor_pb2.ValidateParamsRequest(task_type=task_type, params=to_struct(params))
        return from_struct((await self._call("ValidateParams", request, timeout)).params)

    async def inspect(self, key: str) -> tuple[str, dict[str, Any]]:
        """(format, facts) of a stored file, as ProcessorService.Inspect reads it."""
        response = await self._call("Inspect", processor_pb2.InspectRequest(key=key))
        return response.format, from_struct_plain(response.metadata)


class Backends:
    """One long-lived channel per peer and its client, for the app's lifetime."""

    def __init__(self, settings: Settings) -> None:
        timeout = settings.rpc_timeout_seconds
        self.channels: dict[str, grpc.aio.Channel] = {
            "jobs": channel(settings.jobs_addr, settings.grpc_load_balancing),
            "storage": channel(settings.storage_addr, settings.grpc_load_balancing),
            "processor": channel(settings.processor_addr, settings.grpc_load_balancing),
        }
        self.jobs = JobsClient(self.channels["jobs"], timeout)
        self.storage = StorageClient(self.channels["storage"], timeout)
        self.processor = ProcessorClient(self.channels["processor"], timeout)

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()
