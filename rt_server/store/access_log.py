"""A student's access log (EC 49064) and the purge of received ciphertext (retention).

The access log is read from the audit trail: every row naming the student,
and every row of a request about the student (a request is received before
it is matched to one of our students). The purge deletes the ciphertext of
transfers imported long enough ago; it keeps the transfer's row (ids,
counts, times), the import ledger, the audit trail and the record of
disclosures (34 CFR 99.32(a)(2): kept as long as the student's records).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select, update

from rt_server.core.statuses import Direction, Status, TransferState
from rt_server.store._db import Bind, aware, reading, transaction
from rt_server.store.audit import write_audit
from rt_server.store.schema import AUDIT_LOG, IMPORT_LEDGER, REQUESTS, TRANSFER_CHUNKS, TRANSFERS
from rt_server.store.students import get_student

__all__ = ["AccessEvent", "Purgeable", "access_events", "purge", "purgeable"]


@dataclass(frozen=True)
class AccessEvent:
    at: dt.datetime
    actor: str
    action: str
    request_id: str | None
    detail: str


def access_events(bind: Bind, student_local_id: str) -> list[AccessEvent]:
    """Every audit row about the student, oldest first. Raises ``NotFound`` (no such student)."""
    a = AUDIT_LOG.c
    with reading(bind) as conn:
        get_student(conn, student_local_id)
        theirs = select(REQUESTS.c.request_id).where(
            REQUESTS.c.local_student_id == student_local_id
        )
        rows = conn.execute(
            select(a.at, a.actor, a.action, a.request_id, a.detail)
            .where(or_(a.student_local_id == student_local_id, a.request_id.in_(theirs)))
            .order_by(a.at, a.id)
        ).mappings()
        return [
            AccessEvent(r["at"], r["actor"], r["action"], r["request_id"], r["detail"])
            for r in rows
        ]


@dataclass(frozen=True)
class Purgeable:
    """A received transfer whose ciphertext retention may delete."""

    transfer_id: str
    request_id: str
    student_local_id: str | None
    imported_at: dt.datetime
    ciphertext_bytes: int


def purgeable(bind: Bind, *, imported_before: dt.datetime) -> list[Purgeable]:
    """Received transfers imported before ``imported_before`` whose ciphertext is still held."""
    t, r, ledger = TRANSFERS.c, REQUESTS.c, IMPORT_LEDGER.c
    imported = (
        select(ledger.transfer_id, func.min(ledger.imported_at).label("imported_at"))
        .group_by(ledger.transfer_id)
        .subquery()
    )
    query = (
        select(
            t.transfer_id,
            t.request_id,
            r.local_student_id,
            imported.c.imported_at,
            t.ciphertext_bytes,
        )
        .join(REQUESTS, r.request_id == t.request_id)
        .join(imported, imported.c.transfer_id == t.transfer_id)
        .where(
            t.direction == Direction.INBOUND.value,
            t.state == TransferState.RECEIVED.value,
            t.purged_at.is_(None),
            r.status.in_([Status.IMPORTED.value]),
            imported.c.imported_at < aware(imported_before),
        )
        .order_by(imported.c.imported_at)
    )
    with reading(bind) as conn:
        return [
            Purgeable(
                row["transfer_id"],
                row["request_id"],
                row["local_student_id"],
                row["imported_at"],
                row["ciphertext_bytes"],
            )
            for row in conn.execute(query).mappings()
        ]


def purge(bind: Bind, items: Sequence[Purgeable], *, actor: str, now: dt.datetime) -> int:
    """Delete the ciphertext of ``items`` (one transaction), audited. Returns how many."""
    at = aware(now)
    done = 0
    with transaction(bind) as conn:
        for item in items:
            result = conn.execute(
                update(TRANSFERS)
                .where(TRANSFERS.c.transfer_id == item.transfer_id, TRANSFERS.c.purged_at.is_(None))
                .values(purged_at=at)
            )
            if result.rowcount != 1:
                continue  # purged meanwhile
            conn.execute(
                delete(TRANSFER_CHUNKS).where(TRANSFER_CHUNKS.c.transfer_id == item.transfer_id)
            )
            write_audit(
                conn,
                actor=actor,
                action="records.purge",
                request_id=item.request_id,  # type: ignore[arg-type]
                student_local_id=item.student_local_id,
                detail=f"received ciphertext of transfer {item.transfer_id} deleted (retention)",
                now=at,
            )
            done += 1
    return done
