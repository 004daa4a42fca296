"""Import: NEW always, DUPLICATE never, CONFLICT when accepted; once; all or nothing."""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from protos.rt.v1 import common_pb2
from rt_client.errors import InvalidInput, NotFound
from rt_server.core import samples
from rt_server.core.importer import import_transfer
from rt_server.core.tables import ALL_TABLES, TABLES
from rt_server.core.validate import validate_row
from rt_server.db.schema import IMPORT_LEDGER

TRANSFER = "7c0a5a52-1a3e-4c1e-9a53-3f1d2b9e6a10"

Incoming = list[tuple[str, int, dict[str, Any]]]


def _his(cn: str, mark: str = "A", **more: Any) -> dict[str, Any]:
    return validate_row(
        "HIS",
        {
            "YR": "2023-2024",
            "TE": "F",
            "CN": cn,
            "ST": "01611920130229",
            "MK": mark,
            "CR": Decimal("5"),
            **more,
        },
    )


def _rows(engine: Engine, code: str, pid: str) -> list[dict[str, Any]]:
    table = TABLES[code].table
    with engine.connect() as conn:
        query = select(table).where(table.c.PID == pid).order_by(table.c.SQ)
        return [dict(r) for r in conn.execute(query).mappings()]


def _hold(engine: Engine, pid: str, code: str, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(TABLES[code].table),
            [{**r, "PID": pid, "SQ": i, "SRC": "LOCAL"} for i, r in enumerate(rows, start=1)],
        )


@pytest.fixture
def held_and_incoming(engine: Engine, student_id: str) -> Incoming:
    """We hold courses 1101 (A) and 2301 (B); the transfer has 1101 A, 2301 B+, 3101, 4101."""
    _hold(engine, student_id, "HIS", [_his("1101"), _his("2301", "B")])
    return [
        ("HIS", 0, _his("1101", SQ=5, SRC="AERIES")),
        ("HIS", 1, _his("2301", "B+")),
        ("HIS", 2, _his("3101")),
        ("HIS", 3, _his("4101", CO="Robert'); DROP TABLE students;--")),
        ("IMM", 0, validate_row("IMM", {"VC": "03", "DN": 1})),
    ]


def test_new_rows_are_written_with_new_sq_and_source(
    engine: Engine, student_id: str, held_and_incoming: Incoming
) -> None:
    result = import_transfer(engine, TRANSFER, student_id, held_and_incoming)
    assert result.already_imported is False
    assert dict(result.imported) == {"HIS": 2, "IMM": 1}
    assert dict(result.skipped) == {"HIS": 2}
    his = _rows(engine, "HIS", student_id)
    assert [(r["SQ"], r["CN"], r["MK"], r["SRC"]) for r in his] == [
        (1, "1101", "A", "LOCAL"),
        (2, "2301", "B", "LOCAL"),
        (3, "3101", "A", "RT"),
        (4, "4101", "A", "RT"),
    ]
    assert his[3]["CO"] == "Robert'); DROP TABLE students;--"
    assert [(r["SQ"], r["SRC"], r["PID"]) for r in _rows(engine, "IMM", student_id)] == [
        (1, "RT", student_id)
    ]
    with engine.connect() as conn:
        ledger = conn.execute(
            select(
                IMPORT_LEDGER.c.table_code,
                IMPORT_LEDGER.c.row_index,
                IMPORT_LEDGER.c.outcome,
                IMPORT_LEDGER.c.local_sq,
            ).order_by(IMPORT_LEDGER.c.table_code, IMPORT_LEDGER.c.row_index)
        ).all()
    assert [tuple(r) for r in ledger] == [
        ("*", -1, "TRANSFER", None),
        ("HIS", 0, "SKIPPED_DUPLICATE", None),
        ("HIS", 1, "SKIPPED_CONFLICT", None),
        ("HIS", 2, "IMPORTED", 3),
        ("HIS", 3, "IMPORTED", 4),
        ("IMM", 0, "IMPORTED", 1),
    ]


def test_accepted_conflicts_are_written_as_additional_rows(
    engine: Engine, student_id: str, held_and_incoming: Incoming
) -> None:
    result = import_transfer(engine, TRANSFER, student_id, held_and_incoming, {(common_pb2.HIS, 1)})
    assert dict(result.imported) == {"HIS": 3, "IMM": 1}
    marks = [(r["CN"], r["MK"]) for r in _rows(engine, "HIS", student_id)]
    assert ("2301", "B") in marks and ("2301", "B+") in marks


def test_accept_all_conflicts(engine: Engine, student_id: str, held_and_incoming: Incoming) -> None:
    result = import_transfer(engine, TRANSFER, student_id, held_and_incoming, "all")
    assert dict(result.imported) == {"HIS": 3, "IMM": 1}
    assert dict(result.skipped) == {"HIS": 1}  # the duplicate, never


def test_second_import_is_a_no_op(
    engine: Engine,
    student_id: str,
    held_and_incoming: Incoming,
    snapshot: Callable[[], Any],
) -> None:
    first = import_transfer(engine, TRANSFER, student_id, held_and_incoming)
    before = snapshot()
    again = import_transfer(engine, TRANSFER, student_id, held_and_incoming, "all")
    assert again.already_imported is True
    assert (again.imported, again.skipped) == (first.imported, first.skipped)
    assert snapshot() == before


def test_import_is_all_or_nothing(
    engine: Engine,
    student_id: str,
    held_and_incoming: Incoming,
    snapshot: Callable[[], Any],
    failing_inserts: Callable[[str, bool], None],
) -> None:
    # HIS rows are inserted before IMM rows; make the IMM insert fail in the database.
    failing_inserts("IMM", True)
    before = snapshot()
    with pytest.raises(Exception, match="disk on fire"):
        import_transfer(engine, TRANSFER, student_id, held_and_incoming)
    assert snapshot() == before
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(IMPORT_LEDGER)).scalar() == 0
    # and once the cause is gone, the same import goes through
    failing_inserts("IMM", False)
    assert import_transfer(engine, TRANSFER, student_id, held_and_incoming).imported["HIS"] == 2


def test_import_inside_a_callers_transaction_rolls_back_only_itself(
    engine: Engine,
    student_id: str,
    held_and_incoming: Incoming,
    failing_inserts: Callable[[str, bool], None],
) -> None:
    from rt_server.core import store
    from rt_server.db.schema import AUDIT_LOG

    failing_inserts("IMM", True)
    with engine.begin() as conn:
        store.write_audit(conn, actor="registrar", action="test.before")
        with pytest.raises(Exception, match="disk on fire"):
            import_transfer(conn, TRANSFER, student_id, held_and_incoming)
        store.write_audit(conn, actor="registrar", action="test.after")
    assert len(_rows(engine, "HIS", student_id)) == 2  # what we held, nothing imported
    with engine.connect() as conn:
        actions = conn.execute(select(AUDIT_LOG.c.action).order_by(AUDIT_LOG.c.id)).scalars()
        assert [a for a in actions if a.startswith("test.")] == ["test.before", "test.after"]
        assert conn.execute(select(func.count()).select_from(IMPORT_LEDGER)).scalar() == 0


@pytest.mark.parametrize(
    ("incoming", "accept", "message"),
    [
        ([("HIS", 0, {"CO": "x" * 61})], set(), "HIS row 0, column CO: longer than 60"),
        ([("HIS", 0, {"CN": "1"}), ("his", 0, {"CN": "2"})], set(), "HIS row 0: given twice"),
        ([("HIS", -1, {"CN": "1"})], set(), "row index must be"),
        ([("XYZ", 0, {})], set(), "unknown record table"),
        ([("HIS", 0, {"CN": "1"})], {("HIS", 9)}, "HIS row 9: accepted conflict is not in"),
        ([("HIS", 0, {"PID": "S999"})], set(), "no such column"),
    ],
)
def test_bad_input_changes_nothing(
    engine: Engine,
    student_id: str,
    snapshot: Callable[[], Any],
    incoming: Incoming,
    accept: set[tuple[str, int]],
    message: str,
) -> None:
    before = snapshot()
    with pytest.raises(InvalidInput, match=message):
        import_transfer(engine, TRANSFER, student_id, incoming, accept)
    assert snapshot() == before


def test_unknown_student(engine: Engine, snapshot: Callable[[], Any]) -> None:
    before = snapshot()
    with pytest.raises(NotFound):
        import_transfer(engine, TRANSFER, "S404", [("HIS", 0, _his("1"))])
    assert snapshot() == before


def test_a_whole_sample_student_imports_and_reimports_as_duplicates(
    engine: Engine, student_id: str
) -> None:
    records = samples.sample_records(random.Random(11))
    incoming = [(code, i, row) for code, rows in records.items() for i, row in enumerate(rows)]
    first = import_transfer(engine, TRANSFER, student_id, incoming)
    assert sum(first.imported.values()) == sum(len(r) for r in records.values()) == 300
    assert list(first.imported) == list(ALL_TABLES)
    # the same rows in another transfer are all duplicates now
    second = import_transfer(engine, "0" * 8 + TRANSFER[8:], student_id, incoming)
    assert dict(second.imported) == {} and sum(second.skipped.values()) == 300


def test_concurrent_imports_of_one_transfer_write_once(
    engine: Engine, student_id: str, held_and_incoming: Incoming
) -> None:
    """The second import waits for the first (student lock / single writer), then no-ops."""
    import threading
    import time

    first_wrote = threading.Event()
    results: dict[str, Any] = {}

    def slow_first() -> None:
        with engine.begin() as conn:
            results["first"] = import_transfer(conn, TRANSFER, student_id, held_and_incoming)
            first_wrote.set()
            time.sleep(0.3)  # still uncommitted while the second one starts

    def second() -> None:
        first_wrote.wait(5)
        results["second"] = import_transfer(engine, TRANSFER, student_id, held_and_incoming)

    threads = [threading.Thread(target=slow_first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results["first"].already_imported is False
    assert results["second"].already_imported is True
    assert len(_rows(engine, "HIS", student_id)) == 4
