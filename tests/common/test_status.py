"""Status names and terminal states: the one definition every Python service uses."""

from __future__ import annotations

from services.common import status
from services.common.gen.radiology.v1 import common_pb2 as pb


def test_names_are_the_contracts_and_round_trip_to_the_enum() -> None:
    names = ["PENDING", "RUNNING", "SUCCESS", "FAILED", "CANCELLED"]
    assert status.STATUS_NAMES == names
    assert [status.PENDING, status.RUNNING, status.SUCCESS, status.FAILED, status.CANCELLED] == names
    for name in names:
        assert status.status_name(status.status_value(name)) == name
    assert status.status_value("FAILED") == pb.STATUS_FAILED


def test_terminal_states_as_values_and_as_names_are_the_same_three() -> None:
    assert status.TERMINAL == {pb.STATUS_SUCCESS, pb.STATUS_FAILED, pb.STATUS_CANCELLED}
    assert status.TERMINAL_NAMES == {"SUCCESS", "FAILED", "CANCELLED"}
    assert {status.status_value(n) for n in status.TERMINAL_NAMES} == status.TERMINAL
