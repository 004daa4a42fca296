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

from collections.abc import Iterable, Iterator

from sqlalchemy import func, select

from protos.rt.v1 import records_pb2
from rt_client.errors import InvalidInput
from rt_server.core._db import Bind, reading
from rt_server.core.tables import TABLES, TableRef, row_to_proto, table_set
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
            table = spec.table
            last_sq: int | None = None
            while True:
                query = select(table).where(table.c.PID == pid)
                if last_sq is not None:
                    query = query.where(table.c.SQ > last_sq)
                page = conn.execute(query.order_by(table.c.SQ).limit(batch_rows)).mappings().all()
                if not page:
                    break
                batch = records_pb2.RecordBatch(table=spec.enum)
                getattr(batch, spec.batch_field).extend(row_to_proto(spec, row) for row in page)
                yield batch
                if len(page) < batch_rows:
                    break
                last_sq = page[-1]["SQ"]
