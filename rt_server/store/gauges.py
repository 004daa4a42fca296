"""Counts for the server's metrics, read when Prometheus scrapes (``flows.metrics``).

Only counts by low-cardinality columns (direction, status, kind): never a
student, a request id or any other value a label could leak.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from sqlalchemy import case, func, select

from rt_server.core.statuses import OutboxStatus
from rt_server.store.engine import READ_ONLY
from rt_server.store.schema import OUTBOX, REQUESTS
from rt_server.store.units import Database

__all__ = ["outbox_counts", "request_counts"]

_REQUESTS_BY_STATUS: Final = select(REQUESTS.c.direction, REQUESTS.c.status, func.count()).group_by(
    REQUESTS.c.direction, REQUESTS.c.status
)


def request_counts(db: Database) -> dict[tuple[str, str], int]:
    """{(direction, status): requests}: every request this district holds."""
    with db.connect().execution_options(**READ_ONLY) as conn:
        rows = conn.execute(_REQUESTS_BY_STATUS).all()
    return {(direction, status): count for direction, status, count in rows}


def outbox_counts(db: Database, now: dt.datetime) -> dict[tuple[str, str], int]:
    """{(kind, state): items} of the outbox not yet done.

    ``state`` is ``due`` (to send now), ``waiting`` (a retry later) or
    ``failed`` (given up).
    """
    c = OUTBOX.c
    state = case(
        (c.status == OutboxStatus.FAILED.value, "failed"),
        (c.next_attempt_at <= now, "due"),
        else_="waiting",
    )
    query = (
        select(c.kind, state, func.count())
        .where(c.status != OutboxStatus.DONE.value)
        .group_by(c.kind, state)
    )
    with db.connect().execution_options(**READ_ONLY) as conn:
        rows = conn.execute(query).all()
    return {(kind, label): count for kind, label, count in rows}
