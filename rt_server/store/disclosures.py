"""The record of disclosures a district keeps of each student's records (34 CFR 99.32).

Every sending of records writes one entry, in the transaction that marks the
request SENT: to whom, which tables and how many rows of each were actually
sent (not what was approved: a table the student has no rows of discloses
nothing), when, on what legal basis, by whom. The
entry is for the student's family and the district's auditors, so it names the
student; its audit row does not (district code and tables only).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Final

from sqlalchemy import Connection, insert, select

from rt_client.errors import InvalidInput
from rt_client.ids import RequestId, parse_district_code, parse_school_code
from rt_server.core.inputs import parse_actor, parse_text
from rt_server.core.model import DisclosureRecord
from rt_server.core.tables import TableRef, format_table_list, parse_table_list, table_set
from rt_server.store._db import Bind, aware, reading, within
from rt_server.store.audit import write_audit
from rt_server.store.schema import DISCLOSURES, STAFF_LEN, STUDENTS
from rt_server.store.students import get_student

__all__ = ["TRANSFER_LEGAL_BASIS", "list_disclosures", "write_disclosure"]

# 34 CFR 99.32(a)(1) asks for the "legitimate interests" of the party; for a
# transfer that is the exception of 99.31(a)(2).
TRANSFER_LEGAL_BASIS: Final = (
    "34 CFR 99.31(a)(2) transfer to a school where the student seeks to enroll"
)


def write_disclosure(
    bind: Bind,
    *,
    student_local_id: str,
    receiving_district: str,
    receiving_school: str,
    tables: Iterable[TableRef] = (),
    request_id: RequestId,
    acting_staff: str,
    legal_basis: str = TRANSFER_LEGAL_BASIS,
    counts: Mapping[TableRef, int] | None = None,
    now: dt.datetime | None = None,
) -> DisclosureRecord:
    """Record that the student's ``tables`` were disclosed (34 CFR 99.32(a)).

    With ``counts`` (rows sent per table; then no ``tables``), the entry names
    the tables with rows and how many: what was actually disclosed. Runs in
    the caller's transaction when given a connection in one (``_db.within``).
    Raises ``InvalidInput`` or ``NotFound`` (no such student).
    """
    at = aware(now)
    staff = parse_actor(acting_staff, STAFF_LEN)
    district = parse_district_code(receiving_district)
    school = parse_school_code(receiving_school)
    sent: dict[str, int] | None = None
    if counts is not None:
        if tables:
            raise InvalidInput("a disclosure names its tables or its row counts, not both")
        rows = {table_set([t])[0]: n for t, n in counts.items()}
        if any(not isinstance(n, int) or n < 0 for n in rows.values()):
            raise InvalidInput("row counts are whole numbers from 0")
        sent = {code: rows[code] for code in table_set(rows) if rows[code]}
        codes = tuple(sent)
    else:
        codes = table_set(tables)
        if not codes:
            raise InvalidInput("a disclosure names at least one record table")
    basis = parse_text(legal_basis, "legal basis", 200, required=True)
    with within(bind) as conn:
        get_student(conn, student_local_id)
        result = conn.execute(
            insert(DISCLOSURES),
            dict(
                student_local_id=student_local_id,
                receiving_district=district,
                receiving_school=school,
                tables=format_table_list(codes),
                table_counts=None if sent is None else _format_counts(sent),
                disclosed_at=at,
                request_id=request_id,
                legal_basis=basis,
                acting_staff=staff,
            ),
        )
        key = result.inserted_primary_key
        assert key is not None
        write_audit(
            conn,
            actor=staff,
            action="disclosure.write",
            request_id=request_id,
            student_local_id=student_local_id,
            detail=(
                f"to {district}; tables {format_table_list(codes)}"
                if sent is None
                else f"to {district}; rows {_format_counts(sent) or 'none'}"
            ),
            now=at,
        )
        return _disclosures(conn, DISCLOSURES.c.id == int(key[0]))[0]


def _format_counts(counts: Mapping[str, int]) -> str:
    return ",".join(f"{code}={n}" for code, n in counts.items())


def _parse_counts(text: str | None) -> tuple[tuple[str, int], ...] | None:
    if text is None:
        return None
    return tuple(
        (code, int(n)) for code, _, n in (part.partition("=") for part in text.split(",") if part)
    )


def list_disclosures(bind: Bind, student_local_id: str | None = None) -> list[DisclosureRecord]:
    """The record of disclosures, oldest first: of one student, or (``None``/"") of all."""
    condition = DISCLOSURES.c.student_local_id == student_local_id if student_local_id else None
    with reading(bind) as conn:
        return _disclosures(conn, condition)


def _disclosures(conn: Connection, condition: Any) -> list[DisclosureRecord]:
    d, s = DISCLOSURES.c, STUDENTS.c
    query = (
        select(DISCLOSURES, s.legal_first_name, s.legal_middle_name, s.legal_last_name)
        .join(STUDENTS, s.local_id == d.student_local_id)
        .order_by(d.disclosed_at, d.id)
    )
    if condition is not None:
        query = query.where(condition)
    result = []
    for row in conn.execute(query).mappings():
        given = " ".join(n for n in (row["legal_first_name"], row["legal_middle_name"]) if n)
        result.append(
            DisclosureRecord(
                id=row["id"],
                student_local_id=row["student_local_id"],
                student_name=f"{row['legal_last_name']}, {given}",
                receiving_district=row["receiving_district"],
                receiving_school=row["receiving_school"],
                tables=parse_table_list(row["tables"]),
                disclosed_at=row["disclosed_at"],
                request_id=row["request_id"],
                legal_basis=row["legal_basis"],
                acting_staff=row["acting_staff"],
                counts=_parse_counts(row["table_counts"]),
            )
        )
    return result
