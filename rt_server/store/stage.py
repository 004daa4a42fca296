"""A received transfer's rows, staged as they arrive, validated once (``staged_*`` tables).

A format version 2 transfer is decrypted and validated frame by frame while it
arrives (``flows.receiver``, DESIGN.md section 5); each frame's rows are staged
here in the transaction that stores the frame, so a cut delivery that resumes
finds them in step with its bytes. Nothing reads them while the transfer is
RECEIVING; the import (``store.importer``) copies them into the record tables
with set-based SQL (``INSERT ... SELECT``) and deletes them in its transaction.
A refused delivery takes them with it (``discard``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Integer, delete, func, insert, literal, select, union_all

from rt_server.core.tables import TABLES, TableSpec
from rt_server.core.validate import CheckedRows
from rt_server.store._db import bulk_insert
from rt_server.store.schema import RECORD_TABLES, STAGED_TABLES

__all__ = ["copy_all_new", "discard", "read_chunks", "stage_rows", "staged_counts"]


def stage_rows(
    conn: Connection, transfer_id: str, batches: Sequence[tuple[int, CheckedRows]]
) -> None:
    """Stage validated rows: ``(index of the first row in its table, rows)`` per batch."""
    by_table: dict[str, dict[str, list[Any]]] = {}
    for first, rows in batches:
        spec = rows.spec
        columns = by_table.get(spec.code)
        if columns is None:
            columns = by_table[spec.code] = {
                "transfer_id": [],
                "row_index": [],
                **{name: [] for name in spec.column_names},
            }
        count = len(rows)
        columns["transfer_id"].extend([transfer_id] * count)
        columns["row_index"].extend(range(first, first + count))
        for name, values in zip(spec.column_names, rows.columns, strict=True):
            columns[name].extend(values)
    for code, columns in by_table.items():
        bulk_insert(conn, STAGED_TABLES[code], columns)


def discard(conn: Connection, transfer_id: str) -> None:
    """Delete every staged row of the transfer."""
    for table in STAGED_TABLES.values():
        conn.execute(delete(table).where(table.c.transfer_id == transfer_id))


def copy_all_new(
    conn: Connection, transfer_id: str, spec: TableSpec, pid: str, first_sq: int, source: str
) -> int:
    """Copy the staged rows of one table into our record table as the student's new rows.

    One ``INSERT ... SELECT``: row ``i`` becomes SQ ``first_sq + i``, tagged
    ``source``, under ``pid``. Returns the rows copied.
    """
    staged = STAGED_TABLES[spec.code]
    record = RECORD_TABLES[spec.code]
    data = [name for name in spec.column_names if name not in ("SQ", "SRC")]
    rows = select(
        literal(pid, record.c.PID.type),
        literal(first_sq, Integer()) + staged.c.row_index,
        *(staged.c[name] for name in data),
        literal(source, record.c.SRC.type),
    ).where(staged.c.transfer_id == transfer_id)
    result = conn.execute(insert(record).from_select(["PID", "SQ", *data, "SRC"], rows))
    return int(result.rowcount)


def read_chunks(
    conn: Connection, transfer_id: str, codes: Sequence[str], chunk_rows: int
) -> Iterator[tuple[TableSpec, range, CheckedRows]]:
    """The staged rows of ``codes`` in index order, ``chunk_rows`` at a time, as checked rows."""
    for code in codes:
        spec = TABLES[code]
        staged = STAGED_TABLES[code]
        query = (
            select(staged.c.row_index, *(staged.c[n] for n in spec.column_names))
            .where(staged.c.transfer_id == transfer_id)
            .order_by(staged.c.row_index)
        )
        result = conn.execute(query)
        while rows := result.fetchmany(chunk_rows):
            first = rows[0][0]
            columns = tuple(list(values) for values in zip(*(r[1:] for r in rows), strict=True))
            yield spec, range(first, first + len(rows)), CheckedRows(spec, columns)


def staged_counts(conn: Connection, transfer_id: str) -> dict[str, int]:
    """Rows staged for the transfer, per table code (tables with rows only)."""
    queries = [
        select(literal(code), func.count()).where(table.c.transfer_id == transfer_id)
        for code, table in STAGED_TABLES.items()
    ]
    return {code: n for code, n in conn.execute(union_all(*queries)) if n}
