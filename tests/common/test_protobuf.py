"""Struct to plain values: the same as protobuf's own JSON mapping, whole numbers as ints."""

from __future__ import annotations

import math

import pytest
from google.protobuf import json_format, struct_pb2

from services.common.protobuf import from_struct_plain, to_struct


def _reference(value: struct_pb2.Struct) -> object:
    def ints(v: object) -> object:
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
            return int(v)
        if isinstance(v, dict):
            return {k: ints(x) for k, x in v.items()}
        if isinstance(v, list):
            return [ints(x) for x in v]
        return v

    return ints(json_format.MessageToDict(value))


@pytest.mark.parametrize("value", [
    {},
    {"sigma": 2.0, "width": 512, "shape": [512, 512], "name": "é", "flag": True, "off": False, "none": None},
    {"nested": {"deeper": [[], {}, [1.5, -0.0, 2.0**60, -(2.0**53)], "x"]}, "tiny": 1e-300},
])
def test_matches_protobufs_json_mapping_with_whole_numbers_as_ints(value: dict) -> None:
    struct = to_struct(value)
    plain = from_struct_plain(struct)
    assert plain == _reference(struct)
    if "width" in value:
        assert plain["width"] == 512 and type(plain["width"]) is int


def test_an_unset_value_is_none() -> None:
    struct = struct_pb2.Struct()
    struct.fields["x"].list_value.values.add()
    assert from_struct_plain(struct) == {"x": [None]} == _reference(struct)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_number_json_cannot_hold_is_refused(number: float) -> None:
    struct = struct_pb2.Struct()
    struct.fields["x"].struct_value.fields["y"].number_value = number
    with pytest.raises(ValueError):
        from_struct_plain(struct)
