"""What other teams' gRPC code and Kubernetes probes rely on: health and reflection on every service."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

SERVICES = {
    "jobs": "radiology.v1.JobService",
    "storage": "radiology.v1.StorageService",
    "processor": "radiology.v1.ProcessorService",
}


@pytest.mark.parametrize("name", list(SERVICES))
def test_health_and_reflection(platform, name: str) -> None:
    port = getattr(platform.ports, name)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICES[name]):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        listed = {s.name for s in answer.list_services_response.service}
        assert {SERVICES[name], "grpc.health.v1.Health"} <= listed
        # The descriptors are there too, so a client like grpcurl can call without the .proto files.
        (desc,) = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICES[name])]), timeout=5
        )
        assert desc.file_descriptor_response.file_descriptor_proto
