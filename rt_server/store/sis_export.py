"""The rows an import wrote, read back for the hand-back exports (``rt sis export``).

An import enters every run of rows it wrote in ``import_ledger``
(``rt_server.store.importer``): an IMPORTED run was written under SQ
``local_sq .. local_sq + row_count - 1`` of the student the request names, a
REPLACED run updated those rows in place. This module follows the ledger back
to the rows as they stand now, per student: the rows of one request's
transfer, or of every transfer imported since a moment. Students come one at
a time (a generator), so an export of a whole summer's imports holds one
student's rows in memory, never all of them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, select

from rt_client.errors import NotFound
from rt_server.core.tables import ALL_TABLES, TABLES
from rt_server.store._db import Bind, reading
from rt_server.store.schema import IMPORT_LEDGER, RECORD_TABLES, REQUESTS, STUDENTS, TRANSFERS

__all__ = ["ImportedStudent", "imported_students", "request_ids_with_prefix"]

# The ledger outcomes whose rows are ours now (written or updated by an import).
_WRITTEN = ("IMPORTED", "REPLACED")


@dataclass
class ImportedStudent:
    """One student's demographics and the rows imports wrote for them, by table, in SQ order."""

    local_id: str
    ssid: str | None
    first_name: str
    middle_name: str | None
    last_name: str
    birth_date: dt.date
    gender: str | None
    school: str | None
    # table code -> row dicts (``rt_server.core.tables`` form plus PID), transfer order.
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # table code -> SQs of the rows an import replaced in place (accepted conflicts).
    replaced: dict[str, set[int]] = field(default_factory=dict)


def request_ids_with_prefix(bind: Bind, prefix: str) -> list[str]:
    """Request ids starting with ``prefix`` (at most two: enough to tell ambiguous)."""
    column = REQUESTS.c.request_id
    query = select(column).where(column.startswith(prefix, autoescape=True)).limit(2)
    with reading(bind) as conn:
        return list(conn.execute(query).scalars())


def imported_students(
    bind: Bind,
    *,
    request_id: str | None = None,
    since: dt.datetime | None = None,
    transfer_id: str | None = None,
) -> Iterator[ImportedStudent]:
    """The students (in local id order) with rows imported by ``request_id``'s transfer,
    by any transfer imported at or after ``since``, or by ``transfer_id`` (exactly one).

    Raises ``NotFound`` for an unknown request id. A request not imported yet,
    or a moment after the last import, yields no student.
    """
    if sum(x is not None for x in (request_id, since, transfer_id)) != 1:
        raise ValueError("give exactly one of request_id, since and transfer_id")
    ledger = IMPORT_LEDGER.c
    query = (
        select(
            REQUESTS.c.local_student_id,
            ledger.table_code,
            ledger.local_sq,
            ledger.row_count,
            ledger.outcome,
        )
        .select_from(
            IMPORT_LEDGER.join(TRANSFERS, TRANSFERS.c.transfer_id == ledger.transfer_id).join(
                REQUESTS, REQUESTS.c.request_id == TRANSFERS.c.request_id
            )
        )
        .where(ledger.outcome.in_(_WRITTEN), ledger.local_sq.is_not(None))
        .order_by(REQUESTS.c.local_student_id)
    )
    with reading(bind) as conn:
        if request_id is not None:
            known = conn.execute(
                select(REQUESTS.c.request_id).where(REQUESTS.c.request_id == request_id)
            ).first()
            if known is None:
                raise NotFound("no such request")
            query = query.where(REQUESTS.c.request_id == request_id)
        elif transfer_id is not None:
            query = query.where(ledger.transfer_id == transfer_id)
        else:
            query = query.where(ledger.imported_at >= since)
        # SQ ranges per student and table: small (the ledger holds runs, not rows).
        ranges: dict[str, dict[str, list[tuple[int, int]]]] = {}
        replaced: dict[str, dict[str, set[int]]] = {}
        for pid, code, first, count, outcome in conn.execute(query):
            if pid is None or code not in TABLES:
                continue
            ranges.setdefault(pid, {}).setdefault(code, []).append((first, first + count - 1))
            if outcome == "REPLACED":
                replaced.setdefault(pid, {}).setdefault(code, set()).update(
                    range(first, first + count)
                )
        for pid in sorted(ranges):
            student = _student(conn, pid)
            if student is not None:
                student.rows = _rows(conn, pid, ranges[pid])
                student.replaced = replaced.get(pid, {})
                yield student


def _student(conn: Connection, pid: str) -> ImportedStudent | None:
    s = STUDENTS.c
    row = conn.execute(select(STUDENTS).where(s.local_id == pid)).mappings().first()
    if row is None:
        return None
    return ImportedStudent(
        local_id=row["local_id"],
        ssid=row["ssid"],
        first_name=row["legal_first_name"],
        middle_name=row["legal_middle_name"],
        last_name=row["legal_last_name"],
        birth_date=row["birth_date"],
        gender=row["gender"],
        school=row["school"],
    )


def _rows(
    conn: Connection, pid: str, ranges: dict[str, list[tuple[int, int]]]
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for code in ALL_TABLES:
        spans = ranges.get(code)
        if not spans:
            continue
        table = RECORD_TABLES[code]
        seen: dict[int, dict[str, Any]] = {}
        # One query per span; a REPLACED run may name rows an IMPORTED run also names.
        for low, high in sorted(set(spans)):
            query = select(table).where(
                and_(table.c.PID == pid, table.c.SQ >= low, table.c.SQ <= high)
            )
            for row in conn.execute(query).mappings():
                seen[row["SQ"]] = dict(row)
        if seen:
            out[code] = [seen[sq] for sq in sorted(seen)]
    return out
