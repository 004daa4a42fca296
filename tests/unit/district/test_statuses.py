"""The state machine of DESIGN.md section 4, checked exhaustively."""

from __future__ import annotations

import pytest

from protos.rt.v1 import common_pb2
from rt_client.errors import InvalidInput, WrongStatus
from rt_server.core.statuses import (
    TERMINAL,
    Action,
    Direction,
    Status,
    allowed_actions,
    transition,
)

OUT, IN = Direction.OUTBOUND, Direction.INBOUND
S = Status

# (direction, from, action) -> to: the whole of what is allowed.
ALLOWED = {
    (OUT, S.QUEUED, Action.ACCEPT): S.PENDING,
    (OUT, S.QUEUED, Action.APPROVE): S.PENDING,
    (OUT, S.PENDING, Action.APPROVE): S.PENDING,
    (OUT, S.QUEUED, Action.REJECT): S.REJECTED,
    (OUT, S.PENDING, Action.REJECT): S.REJECTED,
    (OUT, S.PENDING, Action.RECEIVE_DATA): S.DATA_RECEIVED,
    (OUT, S.DATA_RECEIVED, Action.IMPORT): S.IMPORTED,
    (OUT, S.QUEUED, Action.FAIL): S.FAILED,
    (OUT, S.PENDING, Action.FAIL): S.FAILED,
    (OUT, S.QUEUED, Action.EXPIRE): S.EXPIRED,
    (OUT, S.PENDING, Action.EXPIRE): S.EXPIRED,
    (OUT, S.FAILED, Action.RETRY): S.QUEUED,
    (IN, S.PENDING, Action.APPROVE): S.PENDING,  # approved stays PENDING while delivering
    (IN, S.PENDING, Action.SEND): S.SENT,
    (IN, S.PENDING, Action.REJECT): S.REJECTED,
    (IN, S.SENT, Action.COMPLETE): S.COMPLETE,
    (IN, S.PENDING, Action.FAIL): S.FAILED,
    (IN, S.FAILED, Action.RETRY): S.PENDING,
}


@pytest.mark.parametrize("direction", list(Direction))
@pytest.mark.parametrize("current", list(Status))
@pytest.mark.parametrize("action", list(Action))
def test_every_combination_is_allowed_exactly_as_designed(
    direction: Direction, current: Status, action: Action
) -> None:
    expected = ALLOWED.get((direction, current, action))
    if expected is None:
        with pytest.raises(WrongStatus):
            transition(current, action, direction)
    else:
        assert transition(current, action, direction) is expected


def test_message_is_written_for_a_registrar() -> None:
    with pytest.raises(WrongStatus) as err:
        transition("IMPORTED", "IMPORT", "OUTBOUND")
    assert str(err.value) == "request is IMPORTED; only DATA_RECEIVED requests can be imported"
    with pytest.raises(WrongStatus) as err:
        transition("SENT", "REJECT", "INBOUND")
    assert str(err.value) == "request is SENT; only PENDING requests can be rejected"
    with pytest.raises(WrongStatus) as err:
        transition("DATA_RECEIVED", "FAIL", "OUTBOUND")
    assert "only QUEUED or PENDING requests" in str(err.value)
    with pytest.raises(WrongStatus, match="a request we received cannot import"):
        transition("PENDING", "IMPORT", "INBOUND")


def test_unknown_names_are_invalid_input() -> None:
    for args in (
        ("LOST", "IMPORT", "OUTBOUND"),
        ("QUEUED", "DANCE", "OUTBOUND"),
        ("QUEUED", "ACCEPT", "SIDEWAYS"),
    ):
        with pytest.raises(InvalidInput):
            transition(*args)


def test_terminal_statuses_have_no_way_out() -> None:
    for direction, statuses in TERMINAL.items():
        for status in statuses:
            assert allowed_actions(status, direction) == ()
    assert allowed_actions("FAILED", "OUTBOUND") == (Action.RETRY,)


def test_status_names_are_the_proto_enum_names() -> None:
    assert {s.value for s in Status} == {
        n for n in common_pb2.RequestStatus.keys() if n != "REQUEST_STATUS_UNSPECIFIED"
    }
