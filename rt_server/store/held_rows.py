"""The record rows we hold of a student, read to classify incoming rows against them.

``rt_server.core.classify`` compares rows (NEW, DUPLICATE, CONFLICT); this
module reads the student's rows of a table, in SQ order, and hands them to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select

from rt_server.core.classify import Classified, classify_against
from rt_server.core.tables import TableRef, TableSpec, table_spec
from rt_server.store._db import Bind, reading
from rt_server.store.schema import RECORD_TABLES

__all__ = ["classify_rows", "load_student_rows"]


def load_student_rows(
    conn: Connection, pid: str, table: TableRef | TableSpec
) -> list[dict[str, Any]]:
    """All rows of ``table`` held for student ``pid``, in SQ order (one query).

    Raises ``InvalidInput`` for an unknown table.
    """
    held = RECORD_TABLES[table_spec(table).code]
    query = select(held).where(held.c.PID == pid).order_by(held.c.SQ)
    return [dict(r) for r in conn.execute(query).mappings()]


def classify_rows(
    bind: Bind,
    pid: str,
    table: TableRef | TableSpec,
    rows: Sequence[Mapping[str, Any]],
    *,
    indexes: Sequence[int] | None = None,
) -> list[Classified]:
    """Classify incoming row dicts of ``table`` against student ``pid``'s rows.

    ``rows`` should be validated row dicts (``validate_batch``). Their indexes
    are their positions in ``rows`` unless ``indexes`` gives them. The
    student's rows of the table are loaded once (a student has a few hundred).
    Raises ``ValueError`` if ``indexes`` and ``rows`` differ in length,
    ``InvalidInput`` for an unknown table.
    """
    if indexes is not None and len(indexes) != len(rows):
        raise ValueError("indexes and rows differ in length")
    with reading(bind) as conn:
        held = load_student_rows(conn, pid, table)
    numbered = zip(range(len(rows)) if indexes is None else indexes, rows, strict=True)
    return classify_against(table, held, numbered)
