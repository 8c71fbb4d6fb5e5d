"""google.protobuf.Struct <-> operation params."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from services.common.protobuf import from_struct


def params_from_struct(value: struct_pb2.Struct) -> dict[str, Any]:
    """Struct numbers are all doubles; give whole numbers back as ints ("width": 512, not 512.0)."""
    return _ints(from_struct(value))


def _ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value
