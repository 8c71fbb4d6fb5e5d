"""Small conversions between protobuf well-known types and Python values."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2


def to_struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if value:
        s.update(value)
    return s


NOT_JSON = "params must be JSON: numbers must be finite"


def from_struct(value: struct_pb2.Struct) -> dict[str, Any]:
    """The Struct as JSON values; ValueError for what JSON cannot hold (NaN, Infinity)."""
    try:
        return json_format.MessageToDict(value)
    except json_format.SerializeToJsonError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


def from_struct_plain(value: struct_pb2.Struct) -> dict[str, Any]:
    """from_struct with whole numbers as ints: Struct stores every number as a double, so
    "width": 512 would otherwise come back as 512.0 ("shape": [512, 512], not [512.0, 512.0])."""
    # Read field by field in one pass: what MessageToDict and a second pass did at about twice the
    # CPU, for every job the gateway answers with.
    return {k: _plain(v) for k, v in value.fields.items()}


def _plain(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        n = v.number_value
        if not math.isfinite(n):
            raise ValueError(f"not valid JSON: {n} is not a finite number")
        return int(n) if n.is_integer() and abs(n) < 2**53 else n
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return {k: _plain(x) for k, x in v.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(x) for x in v.list_value.values]
    return None  # null_value, or no kind set (MessageToDict says None too)


def to_timestamp(dt: datetime | None) -> timestamp_pb2.Timestamp | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt)
    return ts


def iso(ts: timestamp_pb2.Timestamp, present: bool = True) -> str | None:
    """ISO-8601 UTC ("2026-01-02T03:04:05.123456Z"), or None when the field is unset."""
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")
