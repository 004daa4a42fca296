"""Import: NEW always, DUPLICATE never, CONFLICT when chosen (accepted: replaces ours in
place, the old version kept; or kept beside ours); once; all or nothing."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from protos.rt.v1 import common_pb2
from rt_client.errors import InvalidInput, NotFound
from rt_server.core.tables import ALL_TABLES
from rt_server.core.validate import validate_row
from rt_server.store.importer import import_transfer
from rt_server.store.replaced_rows import list_replaced_rows
from rt_server.store.schema import AUDIT_LOG, IMPORT_LEDGER, RECORD_TABLES
from scripts import samples

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
    table = RECORD_TABLES[code]
    with engine.connect() as conn:
        query = select(table).where(table.c.PID == pid).order_by(table.c.SQ)
        return [dict(r) for r in conn.execute(query).mappings()]


def _ledger(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        ledger = IMPORT_LEDGER.c
        query = select(
            ledger.table_code, ledger.row_index, ledger.row_count, ledger.outcome, ledger.local_sq
        ).order_by(ledger.table_code, ledger.row_index)
        return [tuple(r) for r in conn.execute(query)]


def _hold(engine: Engine, pid: str, code: str, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(RECORD_TABLES[code]),
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
    assert _ledger(engine) == [
        ("*", -1, 0, "TRANSFER", None),
        ("HIS", 0, 1, "SKIPPED_DUPLICATE", None),
        ("HIS", 1, 1, "SKIPPED_CONFLICT", None),
        ("HIS", 2, 2, "IMPORTED", 3),  # rows 2 and 3, written as SQ 3 and 4
        ("IMM", 0, 1, "IMPORTED", 1),
    ]


def test_the_ledger_holds_runs_of_one_outcome(
    engine: Engine, student_id: str, snapshot: Callable[[], Any]
) -> None:
    """Consecutive rows with one outcome share an entry, across chunks, but not across gaps."""
    _hold(engine, student_id, "HIS", [_his("1101"), _his("1102"), _his("2301", "B"), _his("2302")])
    his = [
        (0, _his("1101")),  # duplicate
        (1, _his("1102")),  # duplicate
        (2, _his("3101")),  # new
        (3, _his("3102")),  # new
        (4, _his("2301", "B+")),  # conflict, accepted: replaces our SQ 3 in place
        (5, _his("3103")),  # new
        (6, _his("2302", "C")),  # conflict, not accepted
        (7, _his("3104")),  # new
        (9, _his("3105")),  # new, after a gap: index 8 is not in the transfer
        (10, _his("3106")),  # new
    ]
    imm_rows = 2500  # all new, in three chunks
    imm = [
        validate_row("IMM", {"VC": "150", "DN": i + 1, "DT": dt.date(2010, 1, 1) + dt.timedelta(i)})
        for i in range(imm_rows)
    ]
    incoming: Incoming = [("HIS", i, row) for i, row in his] + [
        ("IMM", i, row) for i, row in enumerate(imm)
    ]
    accept = {(common_pb2.HIS, 4)}

    first = import_transfer(engine, TRANSFER, student_id, incoming, accept)

    assert (dict(first.imported), dict(first.skipped)) == ({"HIS": 6, "IMM": imm_rows}, {"HIS": 3})
    assert dict(first.replaced) == {"HIS": 1}
    assert _ledger(engine) == [
        ("*", -1, 0, "TRANSFER", None),
        ("HIS", 0, 2, "SKIPPED_DUPLICATE", None),
        ("HIS", 2, 2, "IMPORTED", 5),  # rows 2..3 as SQ 5..6 (we held 1..4)
        ("HIS", 4, 1, "REPLACED", 3),  # row 4 replaced our SQ 3
        ("HIS", 5, 1, "IMPORTED", 7),
        ("HIS", 6, 1, "SKIPPED_CONFLICT", None),
        ("HIS", 7, 1, "IMPORTED", 8),
        ("HIS", 9, 2, "IMPORTED", 9),
        ("IMM", 0, imm_rows, "IMPORTED", 1),
    ]
    # What the runs say was written under which SQ is what was written.
    written = [(r["SQ"], r["CN"]) for r in _rows(engine, "HIS", student_id) if r["SRC"] == "RT"]
    assert written == [(3, "2301")] + list(
        enumerate(["3101", "3102", "3103", "3104", "3105", "3106"], 5)
    )
    assert [r["DN"] for r in _rows(engine, "IMM", student_id)] == list(range(1, imm_rows + 1))

    before = snapshot()
    again = import_transfer(engine, TRANSFER, student_id, incoming, "all")
    assert again.already_imported is True
    assert (again.imported, again.skipped) == (first.imported, first.skipped)
    assert snapshot() == before


def test_an_accepted_conflict_replaces_our_row_in_place(
    engine: Engine, student_id: str, held_and_incoming: Incoming, snapshot: Callable[[], Any]
) -> None:
    """Issue 13 item 1: accepting a conflict updated nothing and added a second row."""
    result = import_transfer(
        engine,
        TRANSFER,
        student_id,
        held_and_incoming,
        {(common_pb2.HIS, 1)},
        actor="registrar.b",
        now=dt.datetime(2025, 3, 14, tzinfo=dt.UTC),
    )
    assert dict(result.imported) == {"HIS": 2, "IMM": 1}
    assert dict(result.replaced) == {"HIS": 1}
    assert dict(result.skipped) == {"HIS": 1}  # the duplicate
    his = _rows(engine, "HIS", student_id)
    # Our 2301 row, same SQ and natural key, now holds the received values; no second 2301.
    assert [(r["SQ"], r["CN"], r["MK"], r["SRC"]) for r in his] == [
        (1, "1101", "A", "LOCAL"),
        (2, "2301", "B+", "RT"),
        (3, "3101", "A", "RT"),
        (4, "4101", "A", "RT"),
    ]
    # The old version is kept (with who and when), and the audit log points to it
    # without any record value.
    kept = list_replaced_rows(engine, student_id)
    assert [(k.table, k.sq, k.transfer_id, k.row_index, k.replaced_by) for k in kept] == [
        ("HIS", 2, TRANSFER, 1, "registrar.b")
    ]
    assert '"mk": "B"' in kept[0].old_values and '"src": "LOCAL"' in kept[0].old_values
    assert kept[0].replaced_at == dt.datetime(2025, 3, 14, tzinfo=dt.UTC)
    with engine.connect() as conn:
        audit = conn.execute(
            select(AUDIT_LOG.c.actor, AUDIT_LOG.c.action, AUDIT_LOG.c.detail).where(
                AUDIT_LOG.c.action == "import.replace_row"
            )
        ).all()
    assert [(a, b) for a, b, _ in audit] == [("registrar.b", "import.replace_row")]
    assert audit[0][2] == (
        f"HIS SQ 2 replaced by row 1 of transfer {TRANSFER}; "
        "its old values are kept in replaced_rows"
    )
    # Importing twice is still a no-op; a later transfer with the same row is a DUPLICATE.
    state = snapshot()
    again = import_transfer(engine, TRANSFER, student_id, held_and_incoming, "all")
    assert again.already_imported and dict(again.replaced) == {"HIS": 1}
    assert snapshot() == state
    later = import_transfer(engine, "1" * 8 + TRANSFER[8:], student_id, held_and_incoming)
    assert dict(later.imported) == {} and dict(later.skipped) == {"HIS": 4, "IMM": 1}


def test_keep_both_adds_the_conflicting_row_beside_ours(
    engine: Engine, student_id: str, held_and_incoming: Incoming
) -> None:
    result = import_transfer(
        engine, TRANSFER, student_id, held_and_incoming, keep_both={(common_pb2.HIS, 1)}
    )
    assert dict(result.imported) == {"HIS": 3, "IMM": 1} and dict(result.replaced) == {}
    marks = [(r["CN"], r["MK"]) for r in _rows(engine, "HIS", student_id)]
    assert ("2301", "B") in marks and ("2301", "B+") in marks
    assert list_replaced_rows(engine, student_id) == []


def test_accept_all_conflicts(engine: Engine, student_id: str, held_and_incoming: Incoming) -> None:
    result = import_transfer(engine, TRANSFER, student_id, held_and_incoming, "all")
    assert dict(result.imported) == {"HIS": 2, "IMM": 1}
    assert dict(result.replaced) == {"HIS": 1}
    assert dict(result.skipped) == {"HIS": 1}  # the duplicate, never


def test_two_accepted_rows_cannot_replace_one_of_ours(
    engine: Engine, student_id: str, snapshot: Callable[[], Any]
) -> None:
    _hold(engine, student_id, "HIS", [_his("2301", "B")])
    incoming: Incoming = [("HIS", 0, _his("2301", "B+")), ("HIS", 1, _his("2301", "C"))]
    before = snapshot()
    with pytest.raises(InvalidInput, match="HIS rows 0 and 1 both conflict with our row SQ 1"):
        import_transfer(engine, TRANSFER, student_id, incoming, "all")
    assert snapshot() == before
    # One replaces, the other is kept beside it.
    result = import_transfer(
        engine, TRANSFER, student_id, incoming, {("HIS", 0)}, keep_both={("HIS", 1)}
    )
    assert (dict(result.replaced), dict(result.imported)) == ({"HIS": 1}, {"HIS": 1})
    assert [r["MK"] for r in _rows(engine, "HIS", student_id)] == ["B+", "C"]


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
    from rt_server.store import audit
    from rt_server.store.schema import AUDIT_LOG

    failing_inserts("IMM", True)
    with engine.begin() as conn:
        audit.write_audit(conn, actor="registrar", action="test.before")
        with pytest.raises(Exception, match="disk on fire"):
            import_transfer(conn, TRANSFER, student_id, held_and_incoming)
        audit.write_audit(conn, actor="registrar", action="test.after")
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
        ([("HIS", 0, {"CN": "1"})], "both", "HIS row 0: either accept the conflict"),
        ([("HIS", 0, {"PID": "S999"})], set(), "no such column"),
    ],
)
def test_bad_input_changes_nothing(
    engine: Engine,
    student_id: str,
    snapshot: Callable[[], Any],
    incoming: Incoming,
    accept: Any,
    message: str,
) -> None:
    before = snapshot()
    with pytest.raises(InvalidInput, match=message):
        if accept == "both":  # the same row accepted and kept
            import_transfer(
                engine, TRANSFER, student_id, incoming, {("HIS", 0)}, keep_both={("HIS", 0)}
            )
        else:
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
