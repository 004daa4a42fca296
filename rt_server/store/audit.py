"""The audit log, and the system messages a change leaves in a request's thread.

Every change the store makes writes an ``audit_log`` row in the same
transaction: who acted, what they did, to which request or student. The
``detail`` never carries student data: no names, SSIDs, birth dates, record
values or text a registrar typed (only codes, statuses, table lists, district
codes). A status change also writes a system message in the request's thread,
for the registrar to read; it stays here and is never sent to the other district.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Connection, insert, select

from rt_client.ids import RequestId
from rt_server.store._db import Bind, aware, reading, within
from rt_server.store.schema import AUDIT_LOG, STAFF_LEN, THREAD_MESSAGES

__all__ = ["SYSTEM_AUTHOR", "AuditEntry", "list_audit", "system_message", "write_audit"]

SYSTEM_AUTHOR: Final = "system"

# Built once, values given at execution (see ``_rows._request_query``).
_INSERT_AUDIT: Final = insert(AUDIT_LOG)
_INSERT_THREAD_MESSAGE: Final = insert(THREAD_MESSAGES)


def write_audit(
    bind: Bind,
    *,
    actor: str,
    action: str,
    request_id: RequestId | None = None,
    student_local_id: str | None = None,
    detail: str = "",
    now: dt.datetime | None = None,
) -> None:
    """Append to the audit log. ``detail`` must hold no student data.

    Runs in the caller's transaction when given a connection in one
    (``_db.within``). Raises ``ValueError`` for a naive ``now``.
    """
    with within(bind) as conn:
        conn.execute(
            _INSERT_AUDIT,
            {
                "at": aware(now),
                "actor": actor[:STAFF_LEN],
                "action": action,
                "request_id": request_id,
                "student_local_id": student_local_id,
                "detail": detail[:500],
            },
        )


def system_message(conn: Connection, request_id: RequestId, body: str, at: dt.datetime) -> None:
    """A local thread entry recording what happened; never sent to the other district."""
    conn.execute(
        _INSERT_THREAD_MESSAGE,
        {
            "message_id": str(uuid.uuid4()),
            "request_id": request_id,
            "from_district": None,
            "author": SYSTEM_AUTHOR,
            "body": body,
            "sent_at": at,
            "system": True,
            "delivered": False,
        },
    )


@dataclass(frozen=True)
class AuditEntry:
    at: dt.datetime
    actor: str
    action: str
    request_id: str | None
    student_local_id: str | None
    detail: str


def list_audit(bind: Bind, limit: int, request_id: RequestId | None = None) -> list[AuditEntry]:
    """The newest ``limit`` entries of the audit log (of one request, if given), newest first."""
    a = AUDIT_LOG.c
    query = select(AUDIT_LOG).order_by(a.at.desc(), a.id.desc()).limit(limit)
    if request_id is not None:
        query = query.where(a.request_id == request_id)
    with reading(bind) as conn:
        return [
            AuditEntry(
                at=row["at"],
                actor=row["actor"],
                action=row["action"],
                request_id=row["request_id"],
                student_local_id=row["student_local_id"],
                detail=row["detail"] or "",
            )
            for row in conn.execute(query).mappings()
        ]
