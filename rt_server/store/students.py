"""The district's students: enrolment (with the records they bring), corrections, lookup.

A student is written with all the rows of their existing records, or not at
all: every field and every row is validated before the one transaction that
writes them, and a refusal writes nothing. Local ids and SSIDs are unique. The
audit row says how many rows of which tables were loaded, or which fields
were corrected, never the student's name, SSID or birth date.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Final

from sqlalchemy import Connection, func, insert, or_, select, update

from protos.rt.v1 import records_pb2
from rt_client.errors import Duplicate, InvalidInput, NotFound
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

__all__ = [
    "EDITABLE_FIELDS",
    "add_records",
    "add_student",
    "check_student_field",
    "edit_student",
    "get_student",
    "is_enrolled",
    "likely_duplicates",
    "list_students",
    "name_keys",
    "row_counts",
]

# The fields ``edit_student`` corrects (``registrar_pb2.Student``'s names), and
# those of them it may clear.
EDITABLE_FIELDS: Final = (
    "ssid",
    "legal_first_name",
    "legal_middle_name",
    "legal_last_name",
    "birth_date",
    "gender",
    "school",
)
_CLEARABLE: Final = frozenset({"ssid", "legal_middle_name", "gender"})


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
    values: dict[str, Any] = {name: _field(name, student.get(name)) for name in EDITABLE_FIELDS}
    values.update(_name_keys(values["legal_first_name"], values["legal_last_name"]))
    values["created_at"] = at
    rows_by_table = _validated_batches(batches)

    with transaction(bind) as conn:
        if local_id is None:
            local_id = _new_local_id(conn)
        elif is_enrolled(conn, local_id):
            raise Duplicate("a student with this local id is already enrolled")
        _refuse_ssid_held(conn, values["ssid"], local_id)
        conn.execute(insert(STUDENTS), dict(local_id=local_id, **values))
        _insert_rows(conn, local_id, rows_by_table, {})
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


def check_student_field(name: str, value: object) -> Any:
    """One field of ``EDITABLE_FIELDS`` (or ``local_id``), checked as ``add_student`` checks it.

    Raises ``InvalidInput``.
    """
    if name == "local_id":
        return parse_local_id(value, LOCAL_ID_LEN)
    return _field(name, value)


def name_keys(first: str, last: str) -> dict[str, str]:
    """The folded name columns stored beside a student's legal names (for matching)."""
    return _name_keys(first, last)


def _field(name: str, value: object) -> Any:
    """One field of a student, checked as a registrar typed it. Raises ``InvalidInput``."""
    if name == "ssid":
        return parse_ssid(value)
    if name == "legal_first_name":
        return parse_text(value, "legal first name", NAME_LEN, required=True)
    if name == "legal_middle_name":
        return parse_text(value, "legal middle name", NAME_LEN)
    if name == "legal_last_name":
        return parse_text(value, "legal last name", NAME_LEN, required=True)
    if name == "birth_date":
        return parse_birth_date(value, required=True)
    if name == "gender":
        return parse_gender(value)
    assert name == "school"
    if value is not None and not isinstance(value, str):
        raise InvalidInput("school must be a CDS code")
    return parse_school_code(value.strip()) if value and value.strip() else None


def _name_keys(first: str, last: str) -> dict[str, str]:
    return {"last_name_key": name_key(last), "first_name_key": name_key(first)}


def _refuse_ssid_held(conn: Connection, ssid: str | None, local_id: str) -> None:
    """Raises ``Duplicate`` if another student holds ``ssid``: an SSID is one student's."""
    if ssid is None:
        return
    holder = conn.execute(
        select(STUDENTS.c.local_id).where(STUDENTS.c.ssid == ssid, STUDENTS.c.local_id != local_id)
    ).first()
    if holder is not None:
        raise Duplicate(
            f"a student with this SSID is already enrolled ({holder[0]}): an SSID belongs to "
            f"one student; see 'rt student show {holder[0]}'"
        )


def _validated_batches(
    batches: Iterable[records_pb2.RecordBatch],
) -> dict[str, list[dict[str, Any]]]:
    rows_by_table: dict[str, list[dict[str, Any]]] = {}
    for batch in batches:
        code, rows = _validated_batch(batch, rows_by_table)
        rows_by_table.setdefault(code, []).extend(rows)
    return rows_by_table


def _insert_rows(
    conn: Connection,
    local_id: str,
    rows_by_table: Mapping[str, list[dict[str, Any]]],
    highest: Mapping[str, int],
) -> None:
    """Insert the rows, SQ after ``highest`` (the student's highest SQ per table; none: 0)."""
    for code, rows in rows_by_table.items():
        for sq, row in enumerate(rows, start=highest.get(code, 0) + 1):
            row["PID"], row["SQ"] = local_id, sq
        conn.execute(insert(RECORD_TABLES[code]), rows)


def edit_student(
    bind: Bind,
    local_id: str,
    changes: Mapping[str, Any],
    clear: Iterable[str] = (),
    *,
    actor: str,
    now: dt.datetime | None = None,
) -> tuple[str, ...]:
    """Correct a student's demographics; returns the fields that changed (maybe none).

    ``changes`` maps fields of ``EDITABLE_FIELDS`` to new values (checked as
    ``add_student`` checks them); ``clear`` names optional fields to empty
    (ssid, legal_middle_name, gender). The audit row names the fields, not
    their values. Raises ``NotFound``, ``InvalidInput`` or ``Duplicate`` (the
    SSID is another student's); nothing is written then.
    """
    at = aware(now)
    who = parse_actor(actor, STAFF_LEN)
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        raise InvalidInput(f"cannot change {', '.join(unknown)}")
    clear = set(clear)
    not_clearable = sorted(clear - _CLEARABLE)
    if not_clearable:
        raise InvalidInput(
            f"cannot clear {', '.join(not_clearable)}: only "
            f"{', '.join(sorted(_CLEARABLE))} may be emptied"
        )
    both = sorted(clear & set(changes))
    if both:
        raise InvalidInput(f"{', '.join(both)}: either change or clear, not both")
    new = {name: _field(name, value) for name, value in changes.items()}
    new.update(dict.fromkeys(clear))
    with transaction(bind) as conn:
        row = (
            conn.execute(select(STUDENTS).where(STUDENTS.c.local_id == local_id).with_for_update())
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound("no student with this local id")
        changed = tuple(name for name in EDITABLE_FIELDS if name in new and new[name] != row[name])
        if not changed:
            return ()
        values: dict[str, Any] = {name: new[name] for name in changed}
        _refuse_ssid_held(conn, values.get("ssid"), local_id)
        if "legal_first_name" in values or "legal_last_name" in values:
            first = values.get("legal_first_name", row["legal_first_name"])
            values.update(_name_keys(first, values.get("legal_last_name", row["legal_last_name"])))
        conn.execute(update(STUDENTS).where(STUDENTS.c.local_id == local_id).values(values))
        write_audit(
            conn,
            actor=who,
            action="student.edit",
            student_local_id=local_id,
            detail=f"corrected: {', '.join(changed)}",
            now=at,
        )
    return changed


def add_records(
    bind: Bind,
    local_id: str,
    batches: Iterable[records_pb2.RecordBatch],
    *,
    actor: str,
    now: dt.datetime | None = None,
) -> dict[str, int]:
    """Add records to a student who exists; returns the rows added per table.

    The batches are validated as ``add_student``'s; their rows get SQ numbers
    after the student's highest in each table and keep their SRC. Raises
    ``NotFound`` or ``InvalidInput`` (a bad row, or no rows at all); nothing
    is written then.
    """
    at = aware(now)
    who = parse_actor(actor, STAFF_LEN)
    rows_by_table = _validated_batches(batches)
    if not any(rows_by_table.values()):
        raise InvalidInput("no records to add: the file holds no rows")
    with transaction(bind) as conn:
        found = conn.execute(
            select(STUDENTS.c.local_id).where(STUDENTS.c.local_id == local_id).with_for_update()
        ).first()
        if found is None:
            raise NotFound("no student with this local id")
        highest = {}
        for code in rows_by_table:
            table = RECORD_TABLES[code]
            top = conn.execute(select(func.max(table.c.SQ)).where(table.c.PID == local_id))
            highest[code] = top.scalar() or 0
        _insert_rows(conn, local_id, rows_by_table, highest)
        added = {c: len(rows_by_table[c]) for c in ALL_TABLES if rows_by_table.get(c)}
        write_audit(
            conn,
            actor=who,
            action="student.records",
            student_local_id=local_id,
            detail="records: " + ", ".join(f"{c}={n}" for c, n in added.items()),
            now=at,
        )
    return added


def likely_duplicates(bind: Bind, local_id: str) -> list[str]:
    """Other students with the same legal first and last name and birth date as ``local_id``.

    Compared as matching compares names (case and accents folded). Raises ``NotFound``.
    """
    s = STUDENTS.c
    with reading(bind) as conn:
        row = conn.execute(
            select(s.first_name_key, s.last_name_key, s.birth_date).where(s.local_id == local_id)
        ).first()
        if row is None:
            raise NotFound("no student with this local id")
        query = (
            select(s.local_id)
            .where(
                s.first_name_key == row.first_name_key,
                s.last_name_key == row.last_name_key,
                s.birth_date == row.birth_date,
                s.local_id != local_id,
            )
            .order_by(s.local_id)
            .limit(20)
        )
        return list(conn.execute(query).scalars())


def row_counts(bind: Bind, local_id: str) -> dict[str, int]:
    """The rows held of each record table for the student (tables with rows only)."""
    counts: dict[str, int] = {}
    with reading(bind) as conn:
        for code in ALL_TABLES:
            table = RECORD_TABLES[code]
            n = conn.execute(
                select(func.count()).select_from(table).where(table.c.PID == local_id)
            ).scalar()
            if n:
                counts[code] = int(n)
    return counts


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
