"""Export: deterministic order, bounded batches, and a round trip into another district."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, insert

from protos.rt.v1 import common_pb2
from rt_client.errors import InvalidInput
from rt_server.core import samples, store
from rt_server.core.export import count_rows, iter_batches
from rt_server.core.importer import import_transfer
from rt_server.core.tables import ALL_TABLES, TABLES, row_from_proto
from rt_server.core.validate import validate_batch
from rt_server.db.schema import create_schema, make_engine


@pytest.fixture
def loaded(engine: Engine, rng: random.Random) -> str:
    student = samples.sample_student(rng, 1)
    return store.add_student(
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
            insert(spec.table),
            [{"PID": student_id, "SQ": sq, "VC": "03", "DN": sq} for sq in (3, 7, 8, 20, 21, 40)],
        )
    for size in (1, 2, 3, 6, 1000):
        batches = list(iter_batches(engine, student_id, ["IMM"], batch_rows=size))
        assert [m.sq for b in batches for m in b.imm] == [3, 7, 8, 20, 21, 40]
        assert all(len(b.imm) <= size for b in batches)
    with engine.begin() as conn:
        conn.execute(delete(spec.table))
    assert list(iter_batches(engine, student_id, ["IMM"])) == []  # no rows, no batch


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
    pid_b = store.add_student(
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
    store.add_student(
        engine,
        {"legal_first_name": "Kai", "legal_last_name": "Begay", "birth_date": "2012-12-12"},
        actor="registrar",
    )
    rest = list(batches)
    rows = [
        getattr(b, TABLES[common_pb2.TableCode.Name(b.table)].batch_field) for b in [first, *rest]
    ]
    assert sum(len(r) for r in rows) == 300
