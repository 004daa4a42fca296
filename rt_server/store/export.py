"""Read a student's records out of our tables as the plaintext record stream.

Tables come in transfer order (TST, CST, CTS, HIS, ENR, IMM, LAC, PFT), rows in
SQ order, so the same data always gives the same stream. Pages are read by
keyset (``SQ > last``), never OFFSET, so memory stays at one batch however many
rows a student has, and each page is an index range scan of (PID, SQ).

For the counts in a transfer header to match the stream, call ``count_rows``
and ``iter_batches`` on the same connection inside one transaction (on
PostgreSQL at REPEATABLE READ; SQLite transactions are serialisable here).

Two speed hacks serve it, each fenced in a module of its own with a test that
fails when what it relies on changes: the rows are fetched as the driver's
tuples (``_sqlalchemy_internals``) and encoded as protobuf wire bytes by hand
(``_wire``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Select, bindparam, func, select, type_coerce
from sqlalchemy.types import NullType

from protos.rt.v1 import records_pb2
from rt_client.errors import InvalidInput
from rt_server.core.tables import TABLES, TableRef, table_set
from rt_server.core.validate import MAX_ROWS_PER_BATCH
from rt_server.store._db import Bind, reading
from rt_server.store._sqlalchemy_internals import fetch_tuples
from rt_server.store._wire import BatchBuilder
from rt_server.store.schema import RECORD_TABLES

__all__ = ["count_rows", "iter_batches"]


def count_rows(bind: Bind, pid: str, tables: Iterable[TableRef]) -> dict[str, int]:
    """Rows held for student ``pid`` in each of ``tables`` (transfer order, zeros included)."""
    counts: dict[str, int] = {}
    with reading(bind) as conn:
        for code in table_set(tables):
            table = RECORD_TABLES[code]
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
            builder = BatchBuilder(TABLES[code])
            first_page, next_page = _page_queries(code)
            params: dict[str, Any] = {"pid": pid, "rows": batch_rows}
            query = first_page
            while True:
                page = fetch_tuples(conn, query, params)
                if not page:
                    break
                yield builder.build(page)
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
    instead of two. The conversions in ``_wire`` accept what either database hands back.
    """
    spec = TABLES[code]
    table = RECORD_TABLES[code]
    assert spec.columns[0].name == "SQ"
    columns = [type_coerce(table.c[c.name], NullType()).label(c.name) for c in spec.columns]
    first = (
        select(*columns)
        .where(table.c.PID == bindparam("pid"))
        .order_by(table.c.SQ)
        .limit(bindparam("rows"))
    )
    return first, first.where(table.c.SQ > bindparam("after"))
