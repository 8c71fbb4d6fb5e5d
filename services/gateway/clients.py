"""gRPC clients of the backing services: one long-lived channel per peer, a deadline on every call."""

from __future__ import annotations

from typing import Any, Literal

import grpc

from services.common.config import Settings
from services.common.gen.radiology.v1 import jobs_pb2_grpc, processor_pb2_grpc
from services.common.grpc_client import call_metadata, channel
from services.common.storage_client import StorageClient

Service = Literal["jobs", "processor"]
# The service is down or stuck: a 503 worth retrying, not an answer.
UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class BackendError(Exception):
    """A failed gRPC call, remembering which service failed so a 503 can name it."""

    def __init__(self, service: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{service}: {code.name}: {details}")
        self.service = service
        self.code = code
        self.details = details

    @classmethod
    def wrap(cls, service: str, exc: grpc.aio.AioRpcError) -> BackendError:
        return cls(service, exc.code(), exc.details() or "")


class Backends:
    """JobService and ProcessorService stubs and the StorageService client, for the app's lifetime."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.rpc_timeout_seconds
        self.channels: dict[str, grpc.aio.Channel] = {
            "jobs": channel(settings.jobs_addr),
            "storage": channel(settings.storage_addr),
            "processor": channel(settings.processor_addr),
        }
        self.jobs = jobs_pb2_grpc.JobServiceStub(self.channels["jobs"])
        self.storage = StorageClient(self.channels["storage"], self.timeout)
        self.processor = processor_pb2_grpc.ProcessorServiceStub(self.channels["processor"])

    async def call(self, service: Service, method: str, request: Any, *, timeout: float | None = None) -> Any:
        """One unary call with the deadline and trace/request-id metadata; errors become BackendError."""
        stub = getattr(self, service)
        try:
            return await getattr(stub, method)(
                request, timeout=timeout or self.timeout, metadata=call_metadata()
            )
        except grpc.aio.AioRpcError as exc:
            raise BackendError.wrap(service, exc) from None

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()
