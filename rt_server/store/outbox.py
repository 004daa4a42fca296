"""The outbox's SQL: claims with a lease, renewals, retry schedules, done and failed.

The delivery worker (``rt_server.flows.outbox``) decides when to claim, retry
or give up; this module is how each of those lands in the ``outbox`` table.
Items are claimed inside a ``SELECT ... FOR UPDATE SKIP LOCKED`` transaction,
so several replicas can share one PostgreSQL database; SQLite ignores the
locking clause, and its single writer (BEGIN IMMEDIATE) gives the same
guarantee. The queue's bookkeeping commits ``NOT_DURABLE`` (lost in a power
failure, an item is only sent again); giving up for good is durable.

(Items are queued by the change that causes them: ``store.enqueue``.)
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import BindParameter, Connection, Select, and_, bindparam, or_, select, update

from rt_client.ids import DistrictCode, RequestId
from rt_server.core.statuses import OutboxStatus
from rt_server.store._db import aware
from rt_server.store.engine import READ_ONLY, begin_not_durable
from rt_server.store.schema import OUTBOX, REQUESTS
from rt_server.store.units import Database

__all__ = [
    "ClaimLost",
    "OutboxHealth",
    "OutboxItem",
    "PendingSend",
    "claim_next",
    "claimed_items",
    "complete",
    "complete_now",
    "fail",
    "health",
    "pending_sends_of",
    "push_due",
    "release",
    "release_all",
    "renew",
    "reschedule",
]

_QUEUED: Final = OutboxStatus.QUEUED.value
_DONE: Final = OutboxStatus.DONE.value
_FAILED: Final = OutboxStatus.FAILED.value


class ClaimLost(Exception):  # noqa: N818 - not an error of the flow: a signal to let go
    """Another worker holds this item now (our lease ran out): drop it, touch nothing.

    Raised by handlers that notice it (e.g. a seal superseded by another
    attempt, ``rt_server.store.spool``); the work is the other worker's to finish.
    """


@dataclass(frozen=True)
class OutboxItem:
    """One queued send: what (``kind``, ``payload``), for which request, to whom."""

    id: int
    kind: str
    request_id: RequestId
    to_district: DistrictCode
    payload: bytes
    attempts: int
    created_at: dt.datetime


@dataclass(frozen=True)
class PendingSend:
    """A request's outbox item as its registrar sees it: why it waits, until when."""

    kind: str
    to_district: DistrictCode
    attempts: int
    last_error: str | None
    next_attempt_at: dt.datetime
    sending: bool  # a worker holds it under a live lease
    failed: bool


def _item(row: Any) -> OutboxItem:
    return OutboxItem(
        id=row.id,
        kind=row.kind,
        request_id=RequestId(row.request_id),
        to_district=DistrictCode(row.to_district),
        payload=row.payload,
        attempts=row.attempts,
        created_at=row.created_at,
    )


# Built once (a statement built anew costs SQLAlchemy its cache key on every call).
_CLAIMED_ITEMS: Final = (
    select(OUTBOX)
    .where(
        OUTBOX.c.request_id == bindparam("request_id"),
        OUTBOX.c.status == _QUEUED,
        OUTBOX.c.claimed_by == bindparam("worker"),
    )
    .order_by(OUTBOX.c.id)
)
_COMPLETE: Final = (
    update(OUTBOX)
    .where(OUTBOX.c.id == bindparam("item_id"))
    .values(status=_DONE, claimed_by=None, claimed_until=None, last_error=None)
)


@functools.cache
def _due_queries(of_request: bool) -> tuple[Select[Any], Select[Any]]:
    """(is any item due?, the next due item, locked) -- of one request, or of all."""
    now: BindParameter[dt.datetime] = bindparam("now", type_=OUTBOX.c.next_attempt_at.type)
    due = [
        OUTBOX.c.status == _QUEUED,
        OUTBOX.c.next_attempt_at <= now,
        or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < now),
    ]
    if of_request:
        due.append(OUTBOX.c.request_id == bindparam("request_id"))
    look = select(OUTBOX.c.id).where(*due).limit(1)
    claim = (
        select(OUTBOX)
        .where(*due)
        .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return look, claim


def claim_next(
    db: Database, worker_id: str, now: dt.datetime, until: dt.datetime, request_id: str | None
) -> OutboxItem | None:
    """Claim the next item due at ``now`` (of one request, when named) until ``until``."""
    look, claim = _due_queries(request_id is not None)
    params: dict[str, Any] = {"now": now}
    if request_id is not None:
        params["request_id"] = request_id
    # Most wake-ups find nothing (a worker woken as another took the item):
    # look without the write lock first, which on SQLite is the database's.
    with db.connect().execution_options(**READ_ONLY) as conn:
        if conn.execute(look, params).first() is None:
            return None
    with begin_not_durable(db) as conn:  # a lease: losing it loses nothing
        row = conn.execute(claim, params).first()
        if row is None:
            return None
        conn.execute(
            update(OUTBOX).where(OUTBOX.c.id == row.id),
            dict(claimed_by=worker_id, claimed_until=until),
        )
    return _item(row)


def claimed_items(db: Database, worker_id: str, request_id: str) -> list[OutboxItem]:
    """The items of ``request_id`` that ``worker_id`` holds and has not sent yet (a read)."""
    params = {"request_id": request_id, "worker": worker_id}
    with db.connect().execution_options(**READ_ONLY) as conn:
        rows = conn.execute(_CLAIMED_ITEMS, params).all()
    return [_item(row) for row in rows]


def complete(conn: Connection, item_id: int) -> None:
    """Mark done, inside the caller's unit (with the state change the send caused)."""
    conn.execute(_COMPLETE, {"item_id": item_id})


def complete_now(db: Database, item_id: int) -> None:
    """Mark done in a unit of its own (``NOT_DURABLE``: lost, the item is only sent again)."""
    with begin_not_durable(db) as conn:
        complete(conn, item_id)


def reschedule(
    db: Database,
    item_id: int,
    request_id: str,
    worker_id: str,
    *,
    attempts: int,
    failed: bool,
    next_attempt_at: dt.datetime,
    reason: str,
) -> bool:
    """Record a failed attempt: due again at ``next_attempt_at``, or FAILED for good.

    Only while ``worker_id`` holds the item; returns False (changing nothing)
    when it no longer does. The request shows the attempts ('rt show').
    """
    # A retry schedule lost in a power failure only means an earlier retry;
    # giving up for good (FAILED, which the registrar sees) is kept durably.
    begin = db.begin if failed else functools.partial(begin_not_durable, db)
    with begin() as conn:
        moved = conn.execute(
            update(OUTBOX)
            .where(
                and_(
                    OUTBOX.c.id == item_id,
                    OUTBOX.c.status == _QUEUED,
                    # Only while it is still ours: a replica whose lease ran
                    # out must not reschedule the item another one now holds.
                    OUTBOX.c.claimed_by == worker_id,
                )
            )
            .values(
                attempts=attempts,
                status=_FAILED if failed else _QUEUED,
                next_attempt_at=next_attempt_at,
                last_error=reason[:1000],
                claimed_by=None,
                claimed_until=None,
            )
        ).rowcount
        if moved != 1:
            return False
        conn.execute(
            update(REQUESTS)
            .where(REQUESTS.c.request_id == request_id)
            .values(attempts=attempts, next_attempt_at=None if failed else next_attempt_at)
        )
    return True


def renew(db: Database, worker_id: str, item_ids: list[int], until: dt.datetime) -> set[int]:
    """Extend ``worker_id``'s lease on ``item_ids`` to ``until``; returns the ids no longer its."""
    with begin_not_durable(db) as conn:
        conn.execute(
            update(OUTBOX)
            .where(
                OUTBOX.c.id.in_(item_ids),
                OUTBOX.c.status == _QUEUED,
                OUTBOX.c.claimed_by == worker_id,
            )
            .values(claimed_until=until)
        )
        held = conn.execute(
            select(OUTBOX.c.id).where(OUTBOX.c.id.in_(item_ids), OUTBOX.c.claimed_by == worker_id)
        ).scalars()
        return set(item_ids) - set(held)


def release(db: Database, item_id: int, worker_id: str, now: dt.datetime, reason: str) -> None:
    """Let go of an item ``worker_id`` holds, no attempt counted: due ``now``, for any worker."""
    with begin_not_durable(db) as conn:
        conn.execute(
            update(OUTBOX)
            .where(
                OUTBOX.c.id == item_id,
                OUTBOX.c.status == _QUEUED,
                OUTBOX.c.claimed_by == worker_id,
            )
            .values(
                claimed_by=None,
                claimed_until=None,
                next_attempt_at=now,
                last_error=reason[:1000],
            )
        )


def release_all(db: Database, worker_id: str, now: dt.datetime, reason: str) -> int:
    """Release every item ``worker_id`` still holds, due ``now``. Returns how many."""
    with begin_not_durable(db) as conn:
        result = conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.status == _QUEUED, OUTBOX.c.claimed_by == worker_id)
            .values(
                claimed_by=None,
                claimed_until=None,
                next_attempt_at=now,
                last_error=reason[:1000],
            )
        )
    return int(result.rowcount or 0)


def fail(db: Database, item_id: int, reason: str) -> None:
    """The item failed for good: FAILED, with the reason (durable: the registrar sees it)."""
    with db.begin() as conn:
        conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id == item_id)
            .values(status=_FAILED, last_error=reason[:1000], claimed_by=None, claimed_until=None)
        )


def pending_sends_of(db: Database, request_id: str, now: dt.datetime) -> list[PendingSend]:
    """The items of ``request_id`` not sent yet (queued or given up), oldest first (a read)."""
    query = (
        select(OUTBOX)
        .where(OUTBOX.c.request_id == request_id, OUTBOX.c.status.in_((_QUEUED, _FAILED)))
        .order_by(OUTBOX.c.id)
    )
    with db.connect().execution_options(**READ_ONLY) as conn:
        rows = conn.execute(query).all()
    return [
        PendingSend(
            kind=row.kind,
            to_district=DistrictCode(row.to_district),
            attempts=row.attempts,
            last_error=row.last_error,
            next_attempt_at=aware(row.next_attempt_at),
            sending=row.status == _QUEUED
            and row.claimed_until is not None
            and aware(row.claimed_until) > now,
            failed=row.status == _FAILED,
        )
        for row in rows
    ]


def push_due(db: Database, request_id: str, now: dt.datetime) -> tuple[int, int]:
    """Make ``request_id``'s queued items due ``now``, attempts and horizon unchanged.

    Items a worker holds (being sent) are left to it. Returns (made due, being sent).
    """
    with begin_not_durable(db) as conn:  # a schedule: lost, the item is only tried later
        free = or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < now)
        pushed = conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.request_id == request_id, OUTBOX.c.status == _QUEUED, free)
            .values(next_attempt_at=now)
        ).rowcount
        held = conn.execute(
            select(OUTBOX.c.id).where(
                OUTBOX.c.request_id == request_id, OUTBOX.c.status == _QUEUED, ~free
            )
        ).all()
        if pushed:
            conn.execute(
                update(REQUESTS)
                .where(REQUESTS.c.request_id == request_id)
                .values(next_attempt_at=now)
            )
    return int(pushed or 0), len(held)


@dataclass(frozen=True)
class OutboxHealth:
    """The queue as ``rt doctor`` reports it."""

    queued: int  # still to be sent
    stuck: int  # queued, tried ``stuck_attempts`` times or more, or older than ``stuck_after``
    failed: int  # given up on (``rt retry`` restarts them)
    oldest_queued_at: dt.datetime | None
    last_error: str | None  # of the most-tried queued item


def health(
    engine: Any, now: dt.datetime, stuck_after: dt.timedelta, stuck_attempts: int = 5
) -> OutboxHealth:
    """Counts of the outbox's queued, stuck and failed items (one read-only snapshot)."""
    from sqlalchemy import func

    queued = OUTBOX.c.status == _QUEUED
    stuck = and_(
        queued,
        or_(OUTBOX.c.attempts >= stuck_attempts, OUTBOX.c.created_at < now - stuck_after),
    )
    with engine.connect().execution_options(**READ_ONLY) as conn:
        n_queued, oldest = conn.execute(
            select(func.count(), func.min(OUTBOX.c.created_at)).where(queued)
        ).one()
        n_stuck = conn.execute(select(func.count()).where(stuck)).scalar_one()
        n_failed = conn.execute(select(func.count()).where(OUTBOX.c.status == _FAILED)).scalar_one()
        last_error = conn.execute(
            select(OUTBOX.c.last_error)
            .where(queued, OUTBOX.c.last_error.is_not(None))
            .order_by(OUTBOX.c.attempts.desc())
            .limit(1)
        ).scalar()
    return OutboxHealth(
        queued=int(n_queued),
        stuck=int(n_stuck),
        failed=int(n_failed),
        oldest_queued_at=oldest,
        last_error=last_error,
    )
