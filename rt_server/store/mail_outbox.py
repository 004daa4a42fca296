"""The mail outbox's SQL: notices queued with the event, claimed, sent once, retried.

``queue_notice`` runs in the caller's transaction (the event's own), so a
notice exists exactly when its event committed. Its ``dedupe_key`` is unique:
the same event seen twice (a re-sent request, a reminder checked by two
replicas) queues one notice. The mail worker claims due notices under a short
lease (a guarded UPDATE, so two replicas never send the same one), marks each
SENT durably right after the SMTP server accepted it, or reschedules it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Connection, RowMapping, and_, func, insert, or_, select, update

from rt_server.store._db import Bind, aware, reading, transaction
from rt_server.store.schema import MAIL_OUTBOX

__all__ = [
    "MailNotice",
    "claim_due",
    "count_by_status",
    "queue_for_status",
    "mark_failed",
    "mark_sent",
    "notices",
    "queue_missing",
    "queue_notice",
    "reschedule",
]

QUEUED: Final = "QUEUED"
SENT: Final = "SENT"
FAILED: Final = "FAILED"


@dataclass(frozen=True)
class MailNotice:
    """One queued notice: what it is about, and how its sending went so far."""

    id: int
    dedupe_key: str
    kind: str
    request_id: str | None
    status: str
    attempts: int
    created_at: dt.datetime
    sent_at: dt.datetime | None
    last_error: str | None


def queue_notice(
    conn: Connection, *, kind: str, dedupe_key: str, request_id: str | None, now: dt.datetime
) -> bool:
    """Queue a notice in the caller's transaction; False if one with this key exists."""
    exists = conn.execute(
        select(MAIL_OUTBOX.c.id).where(MAIL_OUTBOX.c.dedupe_key == dedupe_key)
    ).first()
    if exists is not None:
        return False
    at = aware(now)
    conn.execute(
        insert(MAIL_OUTBOX),
        {
            "dedupe_key": dedupe_key[:120],
            "kind": kind,
            "request_id": request_id,
            "status": QUEUED,
            "attempts": 0,
            "next_attempt_at": at,
            "created_at": at,
        },
    )
    return True


def queue_missing(
    bind: Bind, wanted: Sequence[tuple[str, str, str | None]], *, now: dt.datetime
) -> int:
    """Queue each (kind, dedupe key, request id) not queued yet. Returns how many were new.

    Reads first and writes only when something is new, so a pass with nothing
    to add takes no write lock.
    """
    if not wanted:
        return 0
    keys = [key for _, key, _ in wanted]
    with reading(bind) as conn:
        held = set(
            conn.execute(
                select(MAIL_OUTBOX.c.dedupe_key).where(MAIL_OUTBOX.c.dedupe_key.in_(keys))
            ).scalars()
        )
    new = [w for w in wanted if w[1] not in held]
    if not new:
        return 0
    added = 0
    with transaction(bind) as conn:
        for kind, key, request_id in new:
            added += queue_notice(conn, kind=kind, dedupe_key=key, request_id=request_id, now=now)
    return added


# The notices a status change causes (direction, new status) -> kind.
_ON_STATUS: Final = {
    ("OUTBOUND", "DATA_RECEIVED"): "records_arrived",
    ("OUTBOUND", "REJECTED"): "request_rejected",
}


def queue_for_status(
    conn: Connection, request_id: str, direction: str, status: str, now: dt.datetime
) -> None:
    """Queue the notice a request's new ``status`` calls for, if any (the caller's transaction)."""
    kind = _ON_STATUS.get((direction, status))
    if kind is not None:
        queue_notice(
            conn, kind=kind, dedupe_key=f"{kind}:{request_id}", request_id=request_id, now=now
        )


def claim_due(
    bind: Bind, *, now: dt.datetime, lease: dt.timedelta, limit: int = 20
) -> list[MailNotice]:
    """Claim up to ``limit`` due notices for ``lease`` (each claim a guarded update)."""
    at = aware(now)
    claimed: list[MailNotice] = []
    due = (
        MAIL_OUTBOX.c.status == QUEUED,
        MAIL_OUTBOX.c.next_attempt_at <= at,
        or_(MAIL_OUTBOX.c.claimed_until.is_(None), MAIL_OUTBOX.c.claimed_until < at),
    )
    # Polled every few seconds: a read first, so an idle pass takes no write lock.
    with reading(bind) as conn:
        if conn.execute(select(MAIL_OUTBOX.c.id).where(*due).limit(1)).first() is None:
            return claimed
    with transaction(bind) as conn:
        rows = conn.execute(
            select(MAIL_OUTBOX)
            .where(
                MAIL_OUTBOX.c.status == QUEUED,
                MAIL_OUTBOX.c.next_attempt_at <= at,
                or_(MAIL_OUTBOX.c.claimed_until.is_(None), MAIL_OUTBOX.c.claimed_until < at),
            )
            .order_by(MAIL_OUTBOX.c.id)
            .limit(limit)
        ).mappings()
        for row in list(rows):
            result = conn.execute(
                update(MAIL_OUTBOX)
                .where(
                    MAIL_OUTBOX.c.id == row["id"],
                    MAIL_OUTBOX.c.status == QUEUED,
                    or_(
                        MAIL_OUTBOX.c.claimed_until.is_(None),
                        MAIL_OUTBOX.c.claimed_until < at,
                    ),
                )
                .values(claimed_until=at + lease)
            )
            if result.rowcount == 1:
                claimed.append(_notice(row))
    return claimed


def mark_sent(bind: Bind, notice_id: int, *, now: dt.datetime) -> None:
    """The SMTP server accepted it: never sent again."""
    with transaction(bind) as conn:
        conn.execute(
            update(MAIL_OUTBOX)
            .where(MAIL_OUTBOX.c.id == notice_id)
            .values(
                status=SENT,
                sent_at=aware(now),
                claimed_until=None,
                attempts=MAIL_OUTBOX.c.attempts + 1,
                last_error=None,
            )
        )


def reschedule(bind: Bind, notice_id: int, *, error: str, at: dt.datetime) -> None:
    """Not sent this time (``error``, for the log and ``rt mail``): try again at ``at``."""
    with transaction(bind) as conn:
        conn.execute(
            update(MAIL_OUTBOX)
            .where(and_(MAIL_OUTBOX.c.id == notice_id, MAIL_OUTBOX.c.status == QUEUED))
            .values(
                attempts=MAIL_OUTBOX.c.attempts + 1,
                next_attempt_at=aware(at),
                claimed_until=None,
                last_error=error[:500],
            )
        )


def mark_failed(bind: Bind, notice_id: int, *, error: str) -> None:
    """Given up (too old, or it can never be sent): kept, with the reason."""
    with transaction(bind) as conn:
        conn.execute(
            update(MAIL_OUTBOX)
            .where(MAIL_OUTBOX.c.id == notice_id)
            .values(status=FAILED, claimed_until=None, last_error=error[:500])
        )


def notices(
    bind: Bind, *, status: str | None = None, since: dt.datetime | None = None
) -> Sequence[MailNotice]:
    """The notices, oldest first (``status``, ``since``: only those)."""
    query = select(MAIL_OUTBOX).order_by(MAIL_OUTBOX.c.id)
    if status is not None:
        query = query.where(MAIL_OUTBOX.c.status == status)
    if since is not None:
        query = query.where(MAIL_OUTBOX.c.created_at >= aware(since))
    with reading(bind) as conn:
        return [_notice(row) for row in conn.execute(query).mappings()]


def count_by_status(bind: Bind) -> dict[str, int]:
    """How many notices are QUEUED, SENT and FAILED."""
    with reading(bind) as conn:
        rows = conn.execute(
            select(MAIL_OUTBOX.c.status, func.count()).group_by(MAIL_OUTBOX.c.status)
        )
        return {status: n for status, n in rows}


def _notice(r: RowMapping) -> MailNotice:
    return MailNotice(
        id=r["id"],
        dedupe_key=r["dedupe_key"],
        kind=r["kind"],
        request_id=r["request_id"],
        status=r["status"],
        attempts=r["attempts"],
        created_at=r["created_at"],
        sent_at=r["sent_at"],
        last_error=r["last_error"],
    )
