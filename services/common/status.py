"""Task and job status, the one Python definition: the proto enum, its short names ("SUCCESS") as
the jobs database stores them and the API shows them, and which states are terminal."""

from __future__ import annotations

from services.common.gen.radiology.v1 import common_pb2

Status = common_pb2.Status.ValueType


def status_name(value: Status) -> str:
    return common_pb2.Status.Name(value).removeprefix("STATUS_")


def status_value(name: str) -> Status:
    return common_pb2.Status.Value(f"STATUS_{name}")


# Short names, in the order of the enum (UNSPECIFIED is no status).
STATUS_NAMES = [status_name(v) for v in common_pb2.Status.values() if v != common_pb2.STATUS_UNSPECIFIED]
PENDING = status_name(common_pb2.STATUS_PENDING)
RUNNING = status_name(common_pb2.STATUS_RUNNING)
SUCCESS = status_name(common_pb2.STATUS_SUCCESS)
FAILED = status_name(common_pb2.STATUS_FAILED)
CANCELLED = status_name(common_pb2.STATUS_CANCELLED)

# A task or job in one of these states never changes again.
TERMINAL = frozenset({common_pb2.STATUS_SUCCESS, common_pb2.STATUS_FAILED, common_pb2.STATUS_CANCELLED})
TERMINAL_NAMES = frozenset(status_name(v) for v in TERMINAL)
