"""Export: deterministic order, bounded batches, and a round trip into another district."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert

from protos.rt.v1 import common_pb2, records_pb2
from rt_client.errors import InvalidInput
from rt_server.core.tables import (
    ALL_TABLES,
    TABLES,
    ColumnKind,
    ColumnSpec,
    row_from_proto,
    row_to_proto,
)
from rt_server.core.validate import validate_batch
from rt_server.store import students
from rt_server.store.engine import make_engine
from rt_server.store.export import count_rows, iter_batches
from rt_server.store.importer import import_transfer
from rt_server.store.schema import RECORD_TABLES, create_schema
from scripts import samples


@pytest.fixture
def loaded(engine: Engine, rng: random.Random) -> str:
    student = samples.sample_student(rng, 1)
    return students.add_student(
        engine,
        student,
        samples.sample_batches(rng, birth_date=student["birth_date"]),
        actor="loader",
    )


def test_count_rows(engine: Engine, loaded: str) -> None:
    assert count_rows(engine, loaded, [common_pb2.PFT, "HIS", "TST"]) == {
        "TST": 120,
        "HIS": 64,
        "PFT": 7,
    }
    assert count_rows(engine, "S404", ["IMM"]) == {"IMM": 0}


def test_batches_come_in_table_then_sq_order(engine: Engine, loaded: str) -> None:
    batches = list(iter_batches(engine, loaded, reversed(ALL_TABLES), batch_rows=50))
    order = [common_pb2.TableCode.Name(b.table) for b in batches]
    assert order == sorted(order, key=ALL_TABLES.index)
    assert order.count("TST") == 3  # 120 rows in 50 + 50 + 20
    sizes = [len(getattr(b, TABLES["TST"].batch_field)) for b in batches[:3]]
    assert sizes == [50, 50, 20]
    for batch in batches:
        sqs = [m.sq for m in getattr(batch, common_pb2.TableCode.Name(batch.table).lower())]
        assert sqs == sorted(sqs)
    assert list(iter_batches(engine, loaded, ALL_TABLES, batch_rows=50)) == batches


def test_keyset_paging_survives_gaps_and_exact_multiples(engine: Engine, student_id: str) -> None:
    spec = TABLES["IMM"]
    with engine.begin() as conn:
        conn.execute(
            insert(RECORD_TABLES[spec.code]),
            [{"PID": student_id, "SQ": sq, "VC": "03", "DN": sq} for sq in (3, 7, 8, 20, 21, 40)],
        )
    for size in (1, 2, 3, 6, 1000):
        batches = list(iter_batches(engine, student_id, ["IMM"], batch_rows=size))
        assert [m.sq for b in batches for m in b.imm] == [3, 7, 8, 20, 21, 40]
        assert all(len(b.imm) <= size for b in batches)
    with engine.begin() as conn:
        conn.execute(delete(RECORD_TABLES[spec.code]))
    assert list(iter_batches(engine, student_id, ["IMM"])) == []  # no rows, no batch


def _edge_values(column: ColumnSpec) -> list[Any]:
    """Values that are easy to get wrong on the wire, NULL first."""
    if column.kind is ColumnKind.STRING:
        n = column.max_length or 1
        return [None, "", "a", "0", "ñ" * min(n, 50), "€" * n, "x" * n]  # "€" * 60: 180 bytes
    if column.kind is ColumnKind.INT:
        return [None, 0, 1, -1, 127, 128, 16384, -300, 2**31 - 1, -(2**31)]
    if column.kind is ColumnKind.BOOL:
        return [None, True, False]
    if column.kind is ColumnKind.DATE:
        return [None, dt.date(1, 1, 1), dt.date(2024, 2, 29), dt.date(9999, 12, 31)]
    assert column.precision is not None
    largest = Decimal("9" * (column.precision - 2) + ".99")
    return [None, Decimal("0.00"), Decimal("-0.00"), Decimal("-1.5"), Decimal("0.01"), -largest]


def test_batches_hold_exactly_the_stored_values(engine: Engine, student_id: str) -> None:
    """Every table, every kind of value, any page size: what ``row_to_proto`` makes of the rows.

    NULL leaves a field unset while "" and 0 are set; decimals keep their scale
    and "-0.00" is "0.00"; lengths and numbers of every varint size; a column
    NULL throughout a batch; SQ dense, sparse and at the int32 limit.
    """
    sqs = [*range(1, 140), *range(1000, 60000, 4099), 2**31 - 2, 2**31 - 1]
    expected: dict[str, list[Any]] = {}
    with engine.begin() as conn:
        for code in ALL_TABLES:
            spec = TABLES[code]
            rows = []
            for i, sq in enumerate(sqs):
                row: dict[str, Any] = {"SQ": sq}
                for j, column in enumerate(spec.columns[1:]):
                    values = _edge_values(column)
                    row[column.name] = None if 20 <= i < 30 else values[(i + j) % len(values)]
                rows.append(row)
            conn.execute(
                insert(RECORD_TABLES[spec.code]), [{"PID": student_id, **row} for row in rows]
            )
            expected[code] = [row_to_proto(spec, row) for row in rows]
    for size in (1, 7, 128, 1000):
        sent = dict.fromkeys(ALL_TABLES, 0)
        for batch in iter_batches(engine, student_id, ALL_TABLES, batch_rows=size):
            code = common_pb2.TableCode.Name(batch.table)
            want = records_pb2.RecordBatch(table=batch.table)
            field = TABLES[code].batch_field
            getattr(want, field).extend(expected[code][sent[code] : sent[code] + size])
            assert batch == want
            assert batch.SerializeToString() == want.SerializeToString()
            sent[code] += len(getattr(batch, field))
        assert sent == dict.fromkeys(ALL_TABLES, len(sqs))


@pytest.mark.parametrize(
    ("column", "value", "error"),
    [
        ("DN", 2**31, ValueError),  # out of int32 range
        ("DN", "twelve", TypeError),  # text in an INTEGER column
        ("DN", 2.5, TypeError),
        ("SQ", 2**40, ValueError),
        ("SQ", 4.5, TypeError),  # amid whole numbers: a page of SQs checked as a whole
        ("VC", b"\xff", UnicodeDecodeError),  # a BLOB that is not UTF-8
    ],
)
def test_values_that_do_not_fit_the_wire_are_refused(
    engine: Engine, student_id: str, column: str, value: Any, error: type[Exception]
) -> None:
    """SQLite holds any value in any column; the export refuses what the proto cannot carry."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's column types refuse these values on the way in")
    rows = [{"SQ": sq, "VC": "03", "DN": 1} for sq in (3, 6)] + [{"SQ": 5, "VC": "03", "DN": 1}]
    rows[-1][column] = value
    with engine.begin() as conn:
        for row in rows:
            conn.exec_driver_sql(
                'INSERT INTO "IMM" ("PID", "SQ", "VC", "DN") VALUES (?, ?, ?, ?)',
                (student_id, row["SQ"], row["VC"], row["DN"]),
            )
    with pytest.raises(error):
        list(iter_batches(engine, student_id, ["IMM"]))


def test_bad_arguments(engine: Engine, student_id: str) -> None:
    for size in (0, 5001):
        with pytest.raises(InvalidInput):
            list(iter_batches(engine, student_id, ["IMM"], batch_rows=size))
    with pytest.raises(InvalidInput):
        list(iter_batches(engine, student_id, ["NOPE"]))


def test_round_trip_to_another_district(engine: Engine, loaded: str, tmp_path: Path) -> None:
    """What A exports, B validates and imports; B then holds exactly A's values."""
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    create_schema(other)
    pid_b = students.add_student(
        other,
        {"legal_first_name": "Zoë", "legal_last_name": "Østergaard", "birth_date": "2010-02-03"},
        actor="registrar.b",
    )
    incoming = []
    seen: dict[str, int] = {}
    for batch in iter_batches(engine, loaded, ALL_TABLES, batch_rows=40):
        code, rows = validate_batch(batch, first_index=seen.get(batch.table, 0))
        seen[batch.table] = seen.get(batch.table, 0) + len(rows)
        incoming += [(code, seen[batch.table] - len(rows) + i, r) for i, r in enumerate(rows)]
    result = import_transfer(other, "3f1d2b9e-6a10-4c1e-9a53-7c0a5a521a3e", pid_b, incoming)
    assert sum(result.imported.values()) == 300
    for code in ALL_TABLES:
        a = [
            row_from_proto(code, m)
            for b in iter_batches(engine, loaded, [code])
            for m in getattr(b, code.lower())
        ]
        b = [
            row_from_proto(code, m)
            for b in iter_batches(other, pid_b, [code])
            for m in getattr(b, code.lower())
        ]
        data = TABLES[code].data_columns
        assert [[r[c] for c in data] for r in a] == [[r[c] for c in data] for r in b]
        assert {r["SRC"] for r in b} == {"RT"}
    other.dispose()


def test_an_open_export_does_not_hold_up_writers(engine: Engine, loaded: str) -> None:
    """A delivery reading a student's rows must not block the registrar's writes."""
    batches = iter_batches(engine, loaded, ALL_TABLES, batch_rows=10)
    first = next(batches)  # the read transaction is open now
    students.add_student(
        engine,
        {"legal_first_name": "Kai", "legal_last_name": "Begay", "birth_date": "2012-12-12"},
        actor="registrar",
    )
    rest = list(batches)
    rows = [
        getattr(b, TABLES[common_pb2.TableCode.Name(b.table)].batch_field) for b in [first, *rest]
    ]
    assert sum(len(r) for r in rows) == 300
