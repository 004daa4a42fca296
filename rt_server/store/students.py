"""The district's students: enrolment (with the records they bring) and lookup.

A student is written with all the rows of their existing records, or not at
all: every field and every row is validated before the one transaction that
writes them, and a refusal writes nothing. Local ids and SSIDs are unique. The
audit row says how many rows of which tables were loaded, never the student's
name, SSID or birth date.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, insert, or_, select

from protos.rt.v1 import records_pb2
from rt_client.errors import Duplicate, NotFound
from rt_client.ids import parse_school_code
from rt_server.core.inputs import (
    list_limit,
    parse_actor,
    parse_birth_date,
    parse_gender,
    parse_local_id,
    parse_ssid,
    parse_text,
)
from rt_server.core.matching import name_key
from rt_server.core.model import StudentRecord
from rt_server.core.tables import ALL_TABLES, TABLES
from rt_server.core.validate import validate_batch
from rt_server.store._db import Bind, aware, reading, transaction
from rt_server.store.audit import write_audit
from rt_server.store.candidates import student_from_row
from rt_server.store.schema import LOCAL_ID_LEN, NAME_LEN, RECORD_TABLES, STAFF_LEN, STUDENTS

__all__ = ["add_student", "get_student", "is_enrolled", "list_students"]


def add_student(
    bind: Bind,
    student: Mapping[str, Any],
    batches: Iterable[records_pb2.RecordBatch] = (),
    *,
    actor: str,
    now: dt.datetime | None = None,
) -> str:
    """Enroll a student (and load their existing records); returns the local id.

    ``student`` has the keys of ``registrar_pb2.Student``: ``local_id``
    (empty: one is generated, "S" + 9 digits), ``ssid`` (optional, 10
    digits), ``legal_first_name``, ``legal_middle_name`` (optional),
    ``legal_last_name``, ``birth_date`` (``date`` or "YYYY-MM-DD"), ``gender``
    (optional: M, F or X) and ``school`` (optional CDS code). ``batches`` are
    validated like a peer's; their rows get SQ 1, 2, ... per table in order,
    and keep their SRC. Raises ``InvalidInput`` (bad field or row) or
    ``Duplicate`` (local id or SSID already enrolled); nothing is written then.
    """
    at = aware(now)
    who = parse_actor(actor, STAFF_LEN)
    local_id = parse_local_id(student.get("local_id"), LOCAL_ID_LEN)
    first = parse_text(student.get("legal_first_name"), "legal first name", NAME_LEN, required=True)
    last = parse_text(student.get("legal_last_name"), "legal last name", NAME_LEN, required=True)
    assert first is not None and last is not None
    gender = parse_gender(student.get("gender"))
    school = student.get("school") or None
    values: dict[str, Any] = {
        "ssid": parse_ssid(student.get("ssid")),
        "legal_first_name": first,
        "legal_middle_name": parse_text(
            student.get("legal_middle_name"), "legal middle name", NAME_LEN
        ),
        "legal_last_name": last,
        "birth_date": parse_birth_date(student.get("birth_date"), required=True),
        "gender": gender,
        "school": parse_school_code(school) if school else None,
        "last_name_key": name_key(last),
        "first_name_key": name_key(first),
        "created_at": at,
    }

    rows_by_table: dict[str, list[dict[str, Any]]] = {}
    for batch in batches:
        code, rows = _validated_batch(batch, rows_by_table)
        rows_by_table.setdefault(code, []).extend(rows)

    with transaction(bind) as conn:
        if local_id is None:
            local_id = _new_local_id(conn)
        elif is_enrolled(conn, local_id):
            raise Duplicate("a student with this local id is already enrolled")
        if values["ssid"] is not None:
            holder = conn.execute(
                select(STUDENTS.c.local_id).where(STUDENTS.c.ssid == values["ssid"])
            ).first()
            if holder is not None:
                raise Duplicate(f"a student with this SSID is already enrolled ({holder[0]})")
        conn.execute(insert(STUDENTS), dict(local_id=local_id, **values))
        for code, rows in rows_by_table.items():
            for sq, row in enumerate(rows, start=1):
                row["PID"], row["SQ"] = local_id, sq
            conn.execute(insert(RECORD_TABLES[code]), rows)
        counts = ", ".join(f"{c}={len(rows_by_table[c])}" for c in ALL_TABLES if c in rows_by_table)
        write_audit(
            conn,
            actor=who,
            action="student.add",
            student_local_id=local_id,
            detail=f"records: {counts}" if counts else "no records",
            now=at,
        )
    return local_id


def is_enrolled(conn: Connection, local_id: str) -> bool:
    """Whether ``local_id`` is one of our students."""
    return (
        conn.execute(select(STUDENTS.c.local_id).where(STUDENTS.c.local_id == local_id)).first()
        is not None
    )


def _new_local_id(conn: Connection) -> str:
    """A fresh local id: "S" and nine random digits, unused so far."""
    while True:
        candidate = f"S{secrets.randbelow(10**9):09d}"
        if not is_enrolled(conn, candidate):
            return candidate


def _validated_batch(
    batch: records_pb2.RecordBatch, so_far: Mapping[str, list[dict[str, Any]]]
) -> tuple[str, list[dict[str, Any]]]:
    """``validate_batch`` with row indexes counted across the batches of a table."""
    spec = next((t for t in TABLES.values() if t.enum == batch.table), None)
    first_index = len(so_far.get(spec.code, ())) if spec is not None else 0
    return validate_batch(batch, first_index=first_index)


def get_student(bind: Bind, local_id: str) -> StudentRecord:
    """The student ``local_id``. Raises ``NotFound``."""
    with reading(bind) as conn:
        row = (
            conn.execute(select(STUDENTS).where(STUDENTS.c.local_id == local_id)).mappings().first()
        )
    if row is None:
        raise NotFound("no student with this local id")
    return student_from_row(row)


def list_students(bind: Bind, query: str = "", limit: int = 50) -> list[StudentRecord]:
    """Students by local id or SSID (exact) or by the start of a last or first name.

    Name search ignores case and accents. Empty ``query``: all, by local id.
    """
    select_students = select(STUDENTS).order_by(STUDENTS.c.local_id).limit(list_limit(limit, 50))
    query = query.strip()
    if query:
        key = name_key(query)  # letters and digits only: safe inside LIKE
        conditions = [STUDENTS.c.local_id == query, STUDENTS.c.ssid == query]
        if key:
            conditions += [
                STUDENTS.c.last_name_key.like(key + "%"),
                STUDENTS.c.first_name_key.like(key + "%"),
            ]
        select_students = select_students.where(or_(*conditions))
    with reading(bind) as conn:
        return [student_from_row(r) for r in conn.execute(select_students).mappings()]
