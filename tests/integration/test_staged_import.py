"""``stage_received_rows``: rows validated as they arrive, staged, imported with set-based SQL.

The round trip and the review/import tests of ``test_flow`` run again here with
staging on (the same assertions: every value and type, SQ numbering, the
duplicates and conflicts classified against our rows, the same errors); the
tests below check the stage itself: filled at receipt, emptied by the import,
never left behind by a refused delivery.
"""

from __future__ import annotations

import random

import pytest

from rt_server.core.tables import ALL_TABLES
from rt_server.store.schema import STAGED_TABLES
from scripts import samples
from tests.harness.flow import (
    add_student,
    approve,
    count,
    counts,
    create_request,
    import_,
    rows_of,
    small_records,
)
from tests.harness.world import Pair, World
from tests.integration.test_flow import (  # noqa: F401 - collected again, staging on
    test_full_flow_every_table_round_trips,
    test_review_classifies_and_import_takes_new_then_accepted,
)


@pytest.fixture
def districts(harness: World) -> Pair:
    """Both districts started, each staging the rows it receives."""
    pair = harness.pair(stage_received_rows=True)
    pair.start(pair.a)
    pair.start(pair.b)
    return pair


def staged_rows(pair: Pair) -> int:
    return sum(count(pair.b, table) for table in STAGED_TABLES.values())


def test_rows_are_staged_at_receipt_and_gone_after_the_import(districts: Pair) -> None:
    p = districts
    records = samples.sample_records(random.Random(11))
    add_student(p.a, "A1", records)
    add_student(p.b, "B1")
    request_id = create_request(p)
    approve(p, request_id)
    total = sum(len(rows) for rows in records.values())
    assert staged_rows(p) == total  # validated once, at receipt
    result = import_(p, request_id)
    assert counts(result.imported) == {code: len(records[code]) for code in ALL_TABLES}
    assert staged_rows(p) == 0  # no plaintext of the transfer stays staged
    assert sum(len(rows_of(p.b, code, "B1")) for code in ALL_TABLES) == total


def test_without_the_setting_nothing_is_staged(harness: World) -> None:
    p = harness.pair()
    p.start(p.a)
    p.start(p.b)
    add_student(p.a, "A1", small_records(2))
    add_student(p.b, "B1")
    request_id = create_request(p)
    approve(p, request_id)
    assert staged_rows(p) == 0  # encrypted at rest until import
    assert sum(counts(import_(p, request_id).imported).values()) > 0
