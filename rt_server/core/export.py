"""Read a student's records out of our tables as the plaintext record stream.

Tables come in transfer order (TST, CST, CTS, HIS, ENR, IMM, LAC, PFT), rows in
SQ order, so the same data always gives the same stream. Pages are read by
keyset (``SQ > last``), never OFFSET, so memory stays at one batch however many
rows a student has, and each page is an index range scan of (PID, SQ).

For the counts in a transfer header to match the stream, call ``count_rows``
and ``iter_batches`` on the same connection inside one transaction (on
PostgreSQL at REPEATABLE READ; SQLite transactions are serialisable here).
"""

from __future__ import annotations

import decimal
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

from sqlalchemy import Select, bindparam, func, select, type_coerce
from sqlalchemy.types import NullType

from protos.rt.v1 import records_pb2
from rt_client.errors import InvalidInput
from rt_server.core._db import Bind, reading
from rt_server.core.tables import (
    TABLES,
    ColumnKind,
    ColumnSpec,
    TableRef,
    TableSpec,
    normalize_decimal,
    table_set,
)
from rt_server.core.validate import MAX_ROWS_PER_BATCH

__all__ = ["count_rows", "iter_batches"]


def count_rows(bind: Bind, pid: str, tables: Iterable[TableRef]) -> dict[str, int]:
    """Rows held for student ``pid`` in each of ``tables`` (transfer order, zeros included)."""
    counts: dict[str, int] = {}
    with reading(bind) as conn:
        for code in table_set(tables):
            table = TABLES[code].table
            query = select(func.count()).select_from(table).where(table.c.PID == pid)
            counts[code] = int(conn.execute(query).scalar_one())
    return counts


def iter_batches(
    bind: Bind, pid: str, tables: Iterable[TableRef], batch_rows: int = 1000
) -> Iterator[records_pb2.RecordBatch]:
    """Student ``pid``'s rows of ``tables`` as ``RecordBatch`` messages of at most ``batch_rows``.

    A table with no rows yields no batch. ``sq`` carries our SQ and ``src``
    our SRC (the receiver assigns its own at import). Raises ``InvalidInput``
    for an unknown table or a batch size outside 1..MAX_ROWS_PER_BATCH.
    """
    if not 1 <= batch_rows <= MAX_ROWS_PER_BATCH:
        raise InvalidInput(f"batch size must be between 1 and {MAX_ROWS_PER_BATCH}")
    codes = table_set(tables)
    with reading(bind) as conn:
        for code in codes:
            spec = TABLES[code]
            first_page, next_page = _page_queries(code)
            params: dict[str, Any] = {"pid": pid, "rows": batch_rows}
            query = first_page
            while True:
                page = conn.execute(query, params).all()
                if not page:
                    break
                batch = records_pb2.RecordBatch(table=spec.enum)
                _add_rows(spec, getattr(batch, spec.batch_field), page)
                yield batch
                if len(page) < batch_rows:
                    break
                query, params["after"] = next_page, page[-1][0]


@functools.cache
def _page_queries(code: str) -> tuple[Select[*tuple[Any, ...]], ...]:
    """(first page, page after SQ ``:after``) of one student's rows of a table.

    Built once: constructing a statement and its cache key costs SQLAlchemy
    more than running the query does, eight tables per transfer.

    Rows are read with the driver's own values (``type_coerce`` to NullType
    skips SQLAlchemy's result processing): on SQLite a date is already its ISO
    text and a decimal a number, which go to the wire with one conversion
    instead of two. The conversions below accept what either database hands back.
    """
    spec = TABLES[code]
    table = spec.table
    assert spec.columns[0].name == "SQ"
    columns = [type_coerce(table.c[c.name], NullType()).label(c.name) for c in spec.columns]
    first = (
        select(*columns)
        .where(table.c.PID == bindparam("pid"))
        .order_by(table.c.SQ)
        .limit(bindparam("rows"))
    )
    return first, first.where(table.c.SQ > bindparam("after"))


def _date_to_wire(column: ColumnSpec) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        # SQLite: "YYYY-MM-DD" as SQLAlchemy stored it; PostgreSQL: a date.
        return value if type(value) is str else str(value.isoformat())

    return convert


def _decimal_to_wire(column: ColumnSpec) -> Callable[[Any], str]:
    scale = column.scale
    assert scale is not None
    pattern = f"%.{scale}f"

    def convert(value: Any) -> str:
        if isinstance(value, decimal.Decimal):  # PostgreSQL: exact
            return format(normalize_decimal(value, scale), "f")
        # SQLite keeps NUMERIC as a float (or an int when whole); SQLAlchemy
        # reads it back as Decimal("%.{scale}f" % value): the same text here.
        text: str = pattern % value
        return text[1:] if text[0] == "-" and not text.strip("-0.") else text  # one zero: "0.00"

    return convert


def _bool_to_wire(column: ColumnSpec) -> Callable[[Any], bool]:
    return bool  # SQLite: 0 / 1


_TO_WIRE: Final[dict[ColumnKind, Callable[[ColumnSpec], Callable[[Any], Any]]]] = {
    ColumnKind.DATE: _date_to_wire,
    ColumnKind.DECIMAL: _decimal_to_wire,
    ColumnKind.BOOL: _bool_to_wire,
}


def _add_rows(spec: TableSpec, container: Any, page: Sequence[Sequence[Any]]) -> None:
    """Append ``page`` (raw rows, ``spec.columns`` order) to the batch's repeated field."""
    fields, converters = _WRITERS[spec.code]
    if converters:
        # Column by column, each distinct value once (dates and decimals repeat).
        columns = list(zip(*page, strict=True))
        for i, convert in converters:
            distinct = {v: convert(v) for v in set(columns[i]) if v is not None}
            columns[i] = tuple(map(distinct.get, columns[i]))
        page = list(zip(*columns, strict=True))
    add = container.add
    for values in page:
        # NULL leaves the field unset; everything else is set, "" and 0 included.
        add(**{f: v for f, v in zip(fields, values, strict=True) if v is not None})


_WRITERS: Final[dict[str, tuple[tuple[str, ...], list[tuple[int, Callable[[Any], Any]]]]]] = {
    code: (
        tuple(c.field for c in spec.columns),
        [(i, _TO_WIRE[c.kind](c)) for i, c in enumerate(spec.columns) if c.kind in _TO_WIRE],
    )
    for code, spec in TABLES.items()
}
