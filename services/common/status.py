"""Task and job status: the proto enum and its short names ("SUCCESS"), as the jobs database stores
them and the API shows them."""

from __future__ import annotations

from services.common.gen.radiology.v1 import common_pb2

Status = common_pb2.Status.ValueType

TERMINAL = frozenset({common_pb2.STATUS_SUCCESS, common_pb2.STATUS_FAILED, common_pb2.STATUS_CANCELLED})


def status_name(value: Status) -> str:
    return common_pb2.Status.Name(value).removeprefix("STATUS_")


def status_value(name: str) -> Status:
    return common_pb2.Status.Value(f"STATUS_{name}")


STATUS_NAMES = [status_name(v) for v in common_pb2.Status.values() if v != common_pb2.STATUS_UNSPECIFIED]
