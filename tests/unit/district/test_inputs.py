"""The input checks of ``rt_server.core.inputs``: pure, data in, ``InvalidInput`` out."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from protos.rt.v1 import common_pb2
from rt_client.errors import InvalidInput
from rt_server.core import inputs


def test_text_is_stripped_and_bounded() -> None:
    assert inputs.parse_text("  Ana ", "name", 5) == "Ana"
    assert inputs.parse_text(" ", "name", 5) is None
    assert inputs.parse_text(None, "name", 5) is None
    for bad, message in [("abcdef", "longer than 5"), ("a\x00b", "NUL"), (5, "must be text")]:
        with pytest.raises(InvalidInput, match=message):
            inputs.parse_text(bad, "name", 5)
    with pytest.raises(InvalidInput, match="name is required"):
        inputs.parse_text("", "name", 5, required=True)
    with pytest.raises(InvalidInput, match="actor"):
        inputs.parse_actor(" ", 100)


def test_student_fields() -> None:
    assert inputs.parse_ssid("") is None and inputs.parse_ssid("1234567890") == "1234567890"
    assert inputs.parse_gender("x") == "X" and inputs.parse_gender("") is None
    assert inputs.parse_local_id("S-1_a", 16) == "S-1_a" and inputs.parse_local_id("", 16) is None
    assert inputs.parse_birth_date("2010-05-17", required=True) == dt.date(2010, 5, 17)
    assert inputs.parse_birth_date("", required=False) is None
    with pytest.raises(InvalidInput, match="local id may hold only"):
        inputs.parse_local_id("-x", 16)
    with pytest.raises(InvalidInput, match="birth date is required"):
        inputs.parse_birth_date(None, required=True)


def test_timestamp_out_of_range() -> None:
    with pytest.raises(InvalidInput, match="sent-at is out of range"):
        inputs.parse_timestamp(Timestamp(seconds=2**62), "sent-at")


def test_list_limit() -> None:
    assert inputs.list_limit(0, 50) == 50
    assert inputs.list_limit(7, 50) == 7
    assert inputs.list_limit(10**6, 50) == inputs.MAX_LIST_LIMIT


def test_reject_reason_by_name_or_value() -> None:
    assert inputs.parse_reject_reason(common_pb2.STUDENT_NOT_FOUND) == "STUDENT_NOT_FOUND"
    assert inputs.parse_reject_reason("OTHER") == "OTHER"
    for bad in (None, "BORED", "REJECT_REASON_UNSPECIFIED", 0, 999):
        with pytest.raises(InvalidInput, match="reason code"):
            inputs.parse_reject_reason(bad)
