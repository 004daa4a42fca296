"""Parent notices of disclosure (34 CFR 99.34(a)(1)), and what a parent's copy reads.

When the district's annual notice does not say it forwards records to a
school where the student seeks to enroll, each such disclosure owes the
parent a notice: one row here, written in the transaction that writes the
disclosure, listed until someone marks it mailed (who and when kept).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from rt_client.errors import NotFound, WrongStatus
from rt_server.core.inputs import parse_actor
from rt_server.core.model import DisclosureRecord
from rt_server.core.tables import TABLES
from rt_server.store._db import Bind, aware, reading, transaction
from rt_server.store.audit import write_audit
from rt_server.store.disclosures import list_disclosures
from rt_server.store.schema import PARENT_NOTICES, RECORD_TABLES, STAFF_LEN

__all__ = ["ParentNotice", "disclosed_rows", "get_notice", "list_notices", "mark_mailed", "owe"]


@dataclass(frozen=True)
class ParentNotice:
    id: int
    disclosure: DisclosureRecord
    created_at: dt.datetime
    mailed_at: dt.datetime | None
    mailed_by: str | None


def owe(conn: Connection, disclosure: DisclosureRecord, now: dt.datetime) -> None:
    """Record that ``disclosure`` owes the parent a notice (the caller's transaction)."""
    conn.execute(
        insert(PARENT_NOTICES),
        {
            "disclosure_id": disclosure.id,
            "student_local_id": disclosure.student_local_id,
            "created_at": aware(now),
        },
    )


def list_notices(bind: Bind, *, include_mailed: bool = False) -> list[ParentNotice]:
    """The notices owed (with ``include_mailed``, also those mailed), oldest first."""
    query = select(PARENT_NOTICES).order_by(PARENT_NOTICES.c.id)
    if not include_mailed:
        query = query.where(PARENT_NOTICES.c.mailed_at.is_(None))
    with reading(bind) as conn:
        rows = list(conn.execute(query).mappings())
        by_id = {d.id: d for d in list_disclosures(conn)} if rows else {}
    return [_notice(row, by_id[row["disclosure_id"]]) for row in rows]


def get_notice(bind: Bind, notice_id: int) -> ParentNotice:
    """Notice ``notice_id``. Raises ``NotFound``."""
    with reading(bind) as conn:
        row = (
            conn.execute(select(PARENT_NOTICES).where(PARENT_NOTICES.c.id == notice_id))
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"no parent notice {notice_id} (see 'rt notices')")
        (disclosure,) = [
            d
            for d in list_disclosures(conn, row["student_local_id"])
            if d.id == row["disclosure_id"]
        ]
    return _notice(row, disclosure)


def mark_mailed(bind: Bind, notice_id: int, *, actor: str, now: dt.datetime) -> ParentNotice:
    """Mark notice ``notice_id`` mailed by ``actor``. Raises ``NotFound``, ``WrongStatus``."""
    who = parse_actor(actor, STAFF_LEN)
    at = aware(now)
    notice = get_notice(bind, notice_id)
    if notice.mailed_at is not None:
        raise WrongStatus(
            f"parent notice {notice_id} was already marked mailed on "
            f"{notice.mailed_at:%Y-%m-%d} by {notice.mailed_by}"
        )
    with transaction(bind) as conn:
        result = conn.execute(
            update(PARENT_NOTICES)
            .where(PARENT_NOTICES.c.id == notice_id, PARENT_NOTICES.c.mailed_at.is_(None))
            .values(mailed_at=at, mailed_by=who)
        )
        if result.rowcount != 1:
            raise WrongStatus(f"parent notice {notice_id} was marked mailed meanwhile")
        write_audit(
            conn,
            actor=who,
            action="parent_notice.mailed",
            request_id=notice.disclosure.request_id,  # type: ignore[arg-type]
            student_local_id=notice.disclosure.student_local_id,
            detail=f"notice {notice_id} of disclosure {notice.disclosure.id}",
            now=at,
        )
    return get_notice(bind, notice_id)


def disclosed_rows(
    bind: Bind, student_local_id: str, tables: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """The student's rows of ``tables`` as held now, by table, in SQ order (no PID)."""
    out: dict[str, list[dict[str, Any]]] = {}
    with reading(bind) as conn:
        for code in tables:
            if code not in TABLES:
                continue
            table = RECORD_TABLES[code]
            rows = conn.execute(
                select(table).where(table.c.PID == student_local_id).order_by(table.c.SQ)
            ).mappings()
            out[code] = [{k: v for k, v in row.items() if k != "PID"} for row in rows]
    return out


def _notice(row: Any, disclosure: DisclosureRecord) -> ParentNotice:
    return ParentNotice(
        id=row["id"],
        disclosure=disclosure,
        created_at=row["created_at"],
        mailed_at=row["mailed_at"],
        mailed_by=row["mailed_by"],
    )
