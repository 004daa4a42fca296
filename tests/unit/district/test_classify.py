"""NEW / DUPLICATE / CONFLICT against the rows a student already has."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, insert

from rt_server.core.classify import RowClass, classify_against
from rt_server.core.validate import validate_row
from rt_server.store.held_rows import classify_rows
from rt_server.store.schema import RECORD_TABLES


def _his(**values: Any) -> dict[str, Any]:
    base = {
        "YR": "2023-2024",
        "TE": "F",
        "CN": "1101",
        "ST": "01611920130229",
        "CO": "English 9",
        "MK": "A",
        "CR": Decimal("5.00"),
        "CC": Decimal("5.00"),
        "GR": 9,
    }
    base.update(values)
    return validate_row("HIS", base)


def _hold(engine: Engine, pid: str, *rows: dict[str, Any], src: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(RECORD_TABLES["HIS"]),
            [{**r, "PID": pid, "SQ": i, "SRC": src} for i, r in enumerate(rows, start=1)],
        )


def test_new_duplicate_and_conflict(engine: Engine, student_id: str) -> None:
    _hold(engine, student_id, _his(), _his(CN="2301", CO="Integrated Math I", MK="B"))
    incoming = [
        _his(SQ=77, SRC="AERIES"),  # same key, same data; SQ/SRC don't count
        _his(CN="2301", CO="Integrated Math I", MK="B+"),  # same key, other mark
        _his(CN="3101", CO="Biology"),  # key we don't hold
    ]
    result = classify_rows(engine, student_id, "HIS", incoming)
    assert [(c.index, c.row_class) for c in result] == [
        (0, RowClass.DUPLICATE),
        (1, RowClass.CONFLICT),
        (2, RowClass.NEW),
    ]
    duplicate, conflict, new = result
    assert duplicate.existing is not None and duplicate.existing["SQ"] == 1
    assert duplicate.differing_columns == ()
    assert conflict.differing_columns == ("MK",)
    assert conflict.existing is not None and conflict.existing["MK"] == "B"
    assert conflict.existing["PID"] == student_id and conflict.existing["SQ"] == 2
    assert new.existing is None and new.differing_columns == ()
    assert all(c.table == "HIS" for c in result)


def test_decimals_compare_by_value_and_empty_is_not_null(engine: Engine, student_id: str) -> None:
    _hold(engine, student_id, _his(CR=Decimal("2.5"), CH=""))
    same = _his(CR=Decimal("2.50"), CH="")
    null_not_empty = _his(CR=Decimal("2.5"), CH=None)
    result = classify_rows(engine, student_id, "HIS", [same, null_not_empty], indexes=[10, 11])
    assert [(c.index, c.row_class, c.differing_columns) for c in result] == [
        (10, RowClass.DUPLICATE, ()),
        (11, RowClass.CONFLICT, ("CH",)),
    ]


def test_natural_key_is_exact(engine: Engine, student_id: str) -> None:
    _hold(engine, student_id, _his(CN="1101"))
    result = classify_rows(engine, student_id, "HIS", [_his(CN="1101 "), _his(ST="x")])
    assert [c.row_class for c in result] == [RowClass.NEW, RowClass.NEW]


def test_other_students_rows_do_not_count(engine: Engine, student_id: str) -> None:
    from rt_server.store import students

    other = students.add_student(
        engine,
        {"legal_first_name": "A", "legal_last_name": "B", "birth_date": "2010-01-01"},
        actor="t",
    )
    _hold(engine, other, _his())
    assert classify_rows(engine, student_id, "HIS", [_his()])[0].row_class is RowClass.NEW


def test_several_held_rows_with_one_key() -> None:
    held = [
        {**_his(MK="C", CO="X"), "SQ": 1},
        {**_his(MK="B"), "SQ": 2},
        {**_his(MK="A"), "SQ": 3},
    ]
    # an identical one anywhere makes a duplicate
    (dup,) = classify_against("HIS", held, [(0, _his(MK="A"))])
    assert dup.row_class is RowClass.DUPLICATE and dup.existing is not None
    assert dup.existing["SQ"] == 3
    # otherwise the closest one (fewest differing columns, then lowest SQ)
    (conflict,) = classify_against("HIS", held, [(0, _his(MK="D"))])
    assert conflict.row_class is RowClass.CONFLICT and conflict.existing is not None
    assert conflict.existing["SQ"] == 2 and conflict.differing_columns == ("MK",)


def test_dates_and_keys_of_other_tables() -> None:
    held = [{"VC": "03", "DN": 1, "DT": dt.date(2011, 5, 1), "SQ": 1, "SRC": None}]
    rows = [
        (0, validate_row("IMM", {"VC": "03", "DN": 1, "DT": dt.date(2011, 5, 1)})),
        (1, validate_row("IMM", {"VC": "03", "DN": 2, "DT": dt.date(2011, 5, 1)})),
        (2, validate_row("IMM", {"VC": "03", "DN": 1, "DT": dt.date(2011, 5, 2)})),
    ]
    assert [c.row_class for c in classify_against("IMM", held, rows)] == [
        RowClass.DUPLICATE,
        RowClass.CONFLICT,
        RowClass.NEW,
    ]


def test_a_students_300_rows_classify_quickly(engine: Engine, student_id: str) -> None:
    import random
    import time

    from scripts import samples

    records = samples.sample_records(random.Random(3))
    with engine.begin() as conn:
        for code, rows in records.items():
            conn.execute(insert(RECORD_TABLES[code]), [{**r, "PID": student_id} for r in rows])
    started = time.perf_counter()
    for code, rows in records.items():
        result = classify_rows(engine, student_id, code, rows)
        assert all(c.row_class is RowClass.DUPLICATE for c in result)
    assert time.perf_counter() - started < 1.0
