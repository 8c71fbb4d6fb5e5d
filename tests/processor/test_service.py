"""ProcessorService over a real grpc.aio server, reading from the in-memory StorageService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services.common.gen.radiology.v1 import processor_pb2, processor_pb2_grpc
from services.common.protobuf import from_struct, to_struct
from services.common.storage_client import StorageClient
from services.processor import operations
from services.processor.pool import ProcessPool
from services.processor.service import ProcessorService
from tests.conftest import free_port

from .conftest import CORRUPT_PNG, FakeStorage, png_bytes


@pytest.fixture
async def stub(
    storage: FakeStorage, pool: ProcessPool, tmp_path: Path
) -> AsyncIterator[processor_pb2_grpc.ProcessorServiceStub]:
    storage_channel = grpc.aio.insecure_channel(storage.addr)
    server = grpc.aio.server()
    processor_pb2_grpc.add_ProcessorServiceServicer_to_server(
        ProcessorService(storage=StorageClient(storage_channel, 2.0), pool=pool, tmp_root=tmp_path / "tmp"),
        server,
    )
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield processor_pb2_grpc.ProcessorServiceStub(channel)
    await server.stop(0)
    await storage_channel.close()


async def test_list_operations_is_the_catalogue(stub) -> None:
    response = await stub.ListOperations(processor_pb2.ListOperationsRequest(), timeout=5)
    got = {op.name: op for op in response.operations}
    assert {"blur", "resize", "grayscale"} <= set(got)
    for entry in operations.catalogue():
        op = got[entry["name"]]
        assert op.title == entry["title"] and list(op.accepts) == entry["accepts"]
        assert op.outputs == entry["outputs"]
        assert from_struct(op.params_schema) == from_struct(to_struct(entry["params_schema"]))
    assert "sigma" in from_struct(got["blur"].params_schema)["properties"]


async def test_validate_params_fills_defaults_and_refuses_bad_params(stub) -> None:
    ok = await stub.ValidateParams(processor_pb2.ValidateParamsRequest(task_type="resize"), timeout=5)
    assert from_struct(ok.params) == from_struct(to_struct(operations.validate_params("resize", {})))
    assert from_struct(ok.params)["width"] == 512

    for task_type, params in (("blur", {"sigma": "lots"}), ("no_such_op", {})):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ValidateParams(
                processor_pb2.ValidateParamsRequest(task_type=task_type, params=to_struct(params)), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        try:
            operations.validate_params(task_type, params)
        except operations.ParamsError as exc:
            assert err.value.details() == str(exc)
    for number in (float("nan"), float("-inf")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ValidateParams(
                processor_pb2.ValidateParamsRequest(task_type="blur", params=to_struct({"sigma": number})),
                timeout=5,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "finite" in err.value.details()


async def test_inspect_png(stub, storage: FakeStorage, tmp_path: Path) -> None:
    storage.objects["alice/j1/scan.png"] = (png_bytes(80, 60), "image/png")
    response = await stub.Inspect(processor_pb2.InspectRequest(key="alice/j1/scan.png"), timeout=10)
    assert response.format == "png"
    assert [int(n) for n in from_struct(response.metadata)["shape"]] == [60, 80]
    assert list((tmp_path / "tmp").iterdir()) == []  # the downloaded copy is gone


async def test_inspect_errors(stub, storage: FakeStorage) -> None:
    storage.objects["alice/j1/bad.png"] = (CORRUPT_PNG, "image/png")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Inspect(processor_pb2.InspectRequest(key="alice/j1/bad.png"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details()
    assert "Traceback" not in err.value.details()

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Inspect(processor_pb2.InspectRequest(key="alice/j1/missing.png"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    await storage.stop()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Inspect(processor_pb2.InspectRequest(key="alice/j1/bad.png"), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
