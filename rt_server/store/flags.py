"""Flags that follow the student, and the compliance notices the mail side sends.

- WITHHOLD_GRADES (EC 48904.3): the district withholds the student's grades
  (damage or fees); a transfer carries it to the new district, which keeps it.
- MISSING_CHILD (EC 49068.6): law enforcement reported the student missing; a
  request for the student holds its approval and alerts the configured contact.

Setting or clearing a flag writes an audit row (the flag's name, no student
data). A compliance notice is stored once per ``dedupe_key``.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select, update

from rt_client.errors import InvalidInput, NotFound
from rt_server.store._db import Bind, aware, reading, transaction
from rt_server.store.audit import write_audit
from rt_server.store.schema import COMPLIANCE_NOTICES, REQUESTS, STUDENT_FLAGS
from rt_server.store.students import is_enrolled

__all__ = [
    "ComplianceNotice",
    "StudentFlag",
    "StudentFlagRecord",
    "add_notice",
    "flags_of",
    "hold_for_missing_child",
    "mark_notice_sent",
    "notices",
    "parse_flag",
    "set_flag",
]


class StudentFlag(enum.StrEnum):
    WITHHOLD_GRADES = "WITHHOLD_GRADES"  # EC 48904.3
    MISSING_CHILD = "MISSING_CHILD"  # EC 49068.6


def parse_flag(value: str) -> StudentFlag:
    """Raises ``InvalidInput`` naming the flags there are."""
    try:
        return StudentFlag(value.strip().upper().replace("-", "_"))
    except ValueError:
        names = ", ".join(f.value for f in StudentFlag)
        raise InvalidInput(f"unknown flag; the flags are {names}") from None


@dataclass(frozen=True)
class StudentFlagRecord:
    flag: StudentFlag
    source: str
    set_at: dt.datetime
    set_by: str


@dataclass(frozen=True)
class ComplianceNotice:
    dedupe_key: str
    kind: str
    request_id: str | None
    recipient: str
    detail: str
    created_at: dt.datetime
    sent_at: dt.datetime | None


def flags_of(bind: Bind, local_id: str) -> list[StudentFlagRecord]:
    query = (
        select(STUDENT_FLAGS)
        .where(STUDENT_FLAGS.c.student_local_id == local_id)
        .order_by(STUDENT_FLAGS.c.flag)
    )
    with reading(bind) as conn:
        rows = conn.execute(query).mappings().all()
    return [
        StudentFlagRecord(StudentFlag(r["flag"]), r["source"], r["set_at"], r["set_by"])
        for r in rows
    ]


def set_flag(
    bind: Bind,
    local_id: str,
    flag: StudentFlag,
    *,
    on: bool,
    source: str,
    actor: str,
    now: dt.datetime,
    request_id: str | None = None,
) -> bool:
    """Set (``on``) or clear a student's flag. Returns whether anything changed.

    Raises ``NotFound`` (no such student).
    """
    at = aware(now)
    with transaction(bind) as conn:
        if not is_enrolled(conn, local_id):
            raise NotFound("no student with this local id")
        held = conn.execute(
            select(STUDENT_FLAGS.c.flag).where(
                STUDENT_FLAGS.c.student_local_id == local_id, STUDENT_FLAGS.c.flag == flag.value
            )
        ).first()
        if on == (held is not None):
            return False
        if on:
            conn.execute(
                insert(STUDENT_FLAGS).values(
                    student_local_id=local_id,
                    flag=flag.value,
                    source=source[:40],
                    set_at=at,
                    set_by=actor,
                )
            )
        else:
            conn.execute(
                delete(STUDENT_FLAGS).where(
                    STUDENT_FLAGS.c.student_local_id == local_id,
                    STUDENT_FLAGS.c.flag == flag.value,
                )
            )
        write_audit(
            conn,
            actor=actor,
            action="student.flag.set" if on else "student.flag.clear",
            request_id=request_id,  # type: ignore[arg-type]
            student_local_id=local_id,
            detail=f"{flag.value}; source {source}",
            now=at,
        )
        return True


def hold_for_missing_child(
    bind: Bind,
    *,
    request_id: str,
    student_local_id: str,
    recipient: str,
    details: str,
    now: dt.datetime,
) -> None:
    """EC 49068.6: the request's approval held; an audit row and one alert notice (per
    request) for the law enforcement contact. ``details`` name the requesting
    district and school, never the student (the notice's request id leads to them)."""
    at = aware(now)
    with transaction(bind) as conn:
        conn.execute(
            update(REQUESTS)
            .where(REQUESTS.c.request_id == request_id)
            .values(
                held_reason="EC 49068.6: the student is flagged missing; law enforcement alerted"
            )
        )
        new = add_notice(
            conn,
            dedupe_key=f"MISSING_CHILD_ALERT:{request_id}",
            kind="MISSING_CHILD_ALERT",
            request_id=request_id,
            recipient=recipient,
            detail=details,
            now=at,
        )
        write_audit(
            conn,
            actor="system",
            action="missing_child.alert" if new else "missing_child.held",
            request_id=request_id,  # type: ignore[arg-type]
            student_local_id=student_local_id,
            detail=f"EC 49068.6 alert to {recipient[:80]}: {details}"[:500],
            now=at,
        )


def add_notice(
    conn: Connection,
    *,
    dedupe_key: str,
    kind: str,
    request_id: str | None,
    recipient: str,
    detail: str,
    now: dt.datetime,
) -> bool:
    """Store a notice to send, once per key (in the caller's transaction). Returns
    whether it is new."""
    held = conn.execute(
        select(COMPLIANCE_NOTICES.c.dedupe_key).where(COMPLIANCE_NOTICES.c.dedupe_key == dedupe_key)
    ).first()
    if held is not None:
        return False
    conn.execute(
        insert(COMPLIANCE_NOTICES).values(
            dedupe_key=dedupe_key,
            kind=kind,
            request_id=request_id,
            recipient=recipient[:200],
            detail=detail[:1000],
            created_at=aware(now),
        )
    )
    return True


def notices(bind: Bind, *, unsent_only: bool = True) -> list[ComplianceNotice]:
    """The stored notices, oldest first (the mail side's queue)."""
    query = select(COMPLIANCE_NOTICES).order_by(COMPLIANCE_NOTICES.c.created_at)
    if unsent_only:
        query = query.where(COMPLIANCE_NOTICES.c.sent_at.is_(None))
    with reading(bind) as conn:
        rows = conn.execute(query).mappings().all()
    return [ComplianceNotice(**dict(r)) for r in rows]


def mark_notice_sent(bind: Bind, dedupe_key: str, now: dt.datetime) -> None:
    with transaction(bind) as conn:
        conn.execute(
            update(COMPLIANCE_NOTICES)
            .where(COMPLIANCE_NOTICES.c.dedupe_key == dedupe_key)
            .values(sent_at=aware(now))
        )
