"""The bulk paths (raw-value export, column-wise import, ``bulk_insert``) match the plain ones.

Export reads driver values and converts them to the wire itself; import writes
column by column through ``bulk_insert``. Both must give exactly what the
row-dict paths give (``row_to_proto`` over SQLAlchemy-typed rows; ``insert()``
with dicts), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from rt_client.errors import InvalidInput
from rt_server.core.tables import ALL_TABLES, TABLES, row_to_proto
from rt_server.core.validate import checked_batch, validate_batch, validate_row
from rt_server.store._db import bulk_insert
from rt_server.store.export import iter_batches
from rt_server.store.importer import import_batches, import_transfer
from rt_server.store.schema import AUDIT_LOG, IMPORT_LEDGER, RECORD_TABLES, REPLACED_ROWS
from scripts import samples

TRANSFER = "0c9a6a2e-52c4-4a34-9d7e-5f1e1b7e2a10"


def _rows(engine: Engine, code: str, pid: str) -> list[dict[str, Any]]:
    table = RECORD_TABLES[code]
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(table).where(table.c.PID == pid).order_by(table.c.SQ)
            ).mappings()
        ]


def _edge_rows() -> dict[str, list[dict[str, Any]]]:
    """Values where a wire conversion could go wrong: signs, zeros, NULLs, '' and booleans."""
    return {
        "PFT": [
            {"SQ": 1, "TD": dt.date(2024, 3, 1), "CP": "", "SC": Decimal("-0.00"), "HF": False,
             "GR": 0, "SRC": ""},
            {"SQ": 2, "TD": None, "CP": "Push-up", "SC": Decimal("-12.50"), "HF": True,
             "GR": None, "SRC": None},
            {"SQ": 3, "TD": dt.date(1, 1, 1), "CP": "x", "SC": Decimal("9999999.99"), "HF": None,
             "GR": -(2**31), "SRC": "SIS"},
            {"SQ": 4, "SC": Decimal("0.01"), "CP": "Curl-up"},
        ],
        "HIS": [
            {"SQ": 7, "CR": Decimal("5"), "CC": Decimal("0"), "CO": "Álgebra 1 — Honors",
             "DC": dt.date(2025, 6, 13)},
        ],
    }  # fmt: skip


def test_export_matches_row_to_proto_of_typed_rows(engine: Engine, student_id: str) -> None:
    with engine.begin() as conn:
        for code, rows in _edge_rows().items():
            table = RECORD_TABLES[code]
            full = [{**dict.fromkeys(table.c.keys()), **r, "PID": student_id} for r in rows]
            conn.execute(insert(table), full)
    for code in _edge_rows():
        spec = TABLES[code]
        expected = [row_to_proto(spec, r) for r in _rows(engine, code, student_id)]
        got = [
            m
            for b in iter_batches(engine, student_id, [code])
            for m in getattr(b, spec.batch_field)
        ]
        assert got == expected
        assert [m.SerializeToString() for m in got] == [m.SerializeToString() for m in expected]
    pft = next(iter(iter_batches(engine, student_id, ["PFT"]))).pft
    assert [m.sc for m in pft] == ["0.00", "-12.50", "9999999.99", "0.01"]
    assert [m.HasField("hf") and m.hf for m in pft] == [False, True, False, False]
    assert [m.HasField("hf") for m in pft] == [True, True, False, False]


def test_bulk_insert_stores_what_insert_stores(engine: Engine, student_id: str) -> None:
    spec = TABLES["PFT"]
    rows = [{**validate_row(spec, r), "PID": student_id} for r in _edge_rows()["PFT"]]
    names = ("PID", *spec.column_names)
    with engine.begin() as conn:
        bulk_insert(conn, RECORD_TABLES[spec.code], {n: [r[n] for r in rows] for n in names})
    bulked = _rows(engine, "PFT", student_id)
    with engine.begin() as conn:
        conn.execute(RECORD_TABLES[spec.code].delete())
        conn.execute(insert(RECORD_TABLES[spec.code]), rows)
    assert _rows(engine, "PFT", student_id) == bulked
    at = dt.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    with engine.begin() as conn:
        bulk_insert(conn, IMPORT_LEDGER, {
            "transfer_id": [TRANSFER], "table_code": ["PFT"], "row_index": [0], "row_count": [1],
            "outcome": ["IMPORTED"], "local_sq": [None], "imported_at": [at],
        })  # fmt: skip
        assert conn.execute(select(IMPORT_LEDGER.c.imported_at)).scalar_one() == at


def _transfer(rng: random.Random, batch_rows: int) -> list[Any]:
    counts = {"HIS": 2500, "IMM": 20, "PFT": 7}  # HIS: several import chunks
    return samples.sample_batches(rng, counts, batch_rows=batch_rows)


def _as_rows(batches: list[Any]) -> list[tuple[str, int, dict[str, Any]]]:
    seen: dict[str, int] = {}
    out = []
    for batch in batches:
        code, rows = validate_batch(batch)
        out += [(code, seen.get(code, 0) + i, r) for i, r in enumerate(rows)]
        seen[code] = seen.get(code, 0) + len(rows)
    return out


def _as_checked(batches: list[Any]) -> list[tuple[int, Any]]:
    seen: dict[int, int] = {}
    out = []
    for batch in batches:
        first = seen.get(batch.table, 0)
        rows = checked_batch(batch, first_index=first)
        out.append((first, rows))
        seen[batch.table] = first + len(rows)
    return out


def _everything(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        out = {
            code: [
                tuple(r) for r in conn.execute(select(RECORD_TABLES[code]).order_by("PID", "SQ"))
            ]
            for code in ALL_TABLES
        }
        out["ledger"] = sorted(
            tuple(r) for r in conn.execute(
                select(IMPORT_LEDGER.c.table_code, IMPORT_LEDGER.c.row_index,
                       IMPORT_LEDGER.c.row_count, IMPORT_LEDGER.c.outcome,
                       IMPORT_LEDGER.c.local_sq)
            )
        )  # fmt: skip
    return out


@pytest.mark.parametrize("batch_rows", [7, 1000])
def test_import_batches_writes_what_import_transfer_writes(
    engine: Engine,
    student_id: str,
    snapshot: Callable[[], Any],
    batch_rows: int,
) -> None:
    batches = _transfer(random.Random(5), batch_rows)
    # Hold some of the rows already, one of them changed: duplicates and a conflict.
    held = _as_rows(batches)[:40]
    held[3][2]["MK"] = "F" if held[3][2]["MK"] != "F" else "A"
    with engine.begin() as conn:
        conn.execute(
            insert(RECORD_TABLES["HIS"]),
            [
                {**r, "PID": student_id, "SQ": 900 + i, "SRC": "SIS"}
                for i, (_c, _i, r) in enumerate(held)
            ],
        )
    before = snapshot()
    first = import_transfer(engine, TRANSFER, student_id, _as_rows(batches), {("HIS", 3)})
    by_rows = _everything(engine)
    with engine.begin() as conn:  # undo, then the same through import_batches
        conn.execute(IMPORT_LEDGER.delete())
        conn.execute(REPLACED_ROWS.delete())
        conn.execute(AUDIT_LOG.delete().where(AUDIT_LOG.c.action == "import.replace_row"))
        # The accepted conflict replaced our row SQ 903 in place: put it back ...
        his = RECORD_TABLES["HIS"]
        ours = {k: v for k, v in held[3][2].items() if k not in ("PID", "SQ")}
        ours["SRC"] = "SIS"
        conn.execute(his.update().where(his.c.PID == student_id, his.c.SQ == 903).values(ours))
        # ... and remove the rows the import added.
        for code in ALL_TABLES:
            table = RECORD_TABLES[code]
            conn.execute(table.delete().where(table.c.SRC == "RT"))
    assert snapshot() == before
    second = import_batches(engine, TRANSFER, student_id, _as_checked(batches), {("HIS", 3)})
    assert second == first
    assert dict(first.skipped) == {"HIS": 39} and first.imported["HIS"] == 2500 - 40
    assert dict(first.replaced) == {"HIS": 1}
    # The same ledger, however the rows were cut: runs go on from one chunk to the next.
    assert _everything(engine) == by_rows
    assert [entry[:4] for entry in by_rows["ledger"]] == [
        ("*", -1, 0, "TRANSFER"),
        ("HIS", 0, 3, "SKIPPED_DUPLICATE"),
        ("HIS", 3, 1, "REPLACED"),  # the accepted conflict: our SQ 903, in place
        ("HIS", 4, 36, "SKIPPED_DUPLICATE"),
        ("HIS", 40, 2460, "IMPORTED"),
        ("IMM", 0, 20, "IMPORTED"),
        ("PFT", 0, 7, "IMPORTED"),
    ]


def test_import_batches_refuses_batches_out_of_order(
    engine: Engine, student_id: str, snapshot: Callable[[], Any]
) -> None:
    batches = _as_checked(_transfer(random.Random(6), 1000))
    before = snapshot()
    with pytest.raises(InvalidInput, match="^HIS row 0: given twice or out of order"):
        import_batches(engine, TRANSFER, student_id, [batches[1], batches[0], *batches[2:]])
    with pytest.raises(InvalidInput, match="^HIS row 0: given twice"):
        import_batches(engine, TRANSFER, student_id, [batches[0], batches[0]])
    assert snapshot() == before
