"""Table codes as the protocol names them: enum lists and the stored row counts."""

from __future__ import annotations

import pytest

from protos.rt.v1 import common_pb2
from rt_client.errors import InvalidInput
from rt_server.core.table_codes import format_counts, parse_counts, table_enums


def test_counts_round_trip_in_the_order_given() -> None:
    text = format_counts([(common_pb2.TST, 120), (common_pb2.HIS, 64)])
    assert text == "TST=120,HIS=64"
    assert parse_counts(text) == {common_pb2.TST: 120, common_pb2.HIS: 64}


@pytest.mark.parametrize("text", [None, ""])
def test_no_counts(text: str | None) -> None:
    assert parse_counts(text) == {}
    assert format_counts([]) == ""


def test_table_enums_are_in_table_order_and_empty_means_all() -> None:
    assert table_enums(["HIS", "TST"]) == [common_pb2.TST, common_pb2.HIS]
    assert len(table_enums([])) == 8
    with pytest.raises(InvalidInput):
        table_enums(["NOPE"])
