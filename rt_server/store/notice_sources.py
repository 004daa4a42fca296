"""What the time-driven notices read: the inbound requests still waiting for an answer.

(Due dates are computed by ``rt_server.core.due_dates`` from these facts; the
statutory flags a request carries, foster youth and discipline records, are
read here when the schema has them.)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from rt_server.core.statuses import Direction, Status
from rt_server.store._db import Bind, reading
from rt_server.store.schema import REQUESTS

__all__ = ["WaitingRequest", "waiting_inbound_requests"]


@dataclass(frozen=True)
class WaitingRequest:
    """An inbound request not answered yet (PENDING, not decided): ids and codes only."""

    request_id: str
    prior_school: str  # ours: the school asked
    requesting_district: str
    received_at: dt.datetime
    foster_youth: bool = False
    discipline_requested: bool = False


def waiting_inbound_requests(bind: Bind) -> list[WaitingRequest]:
    """Every inbound request still PENDING with no decision, oldest first."""
    columns = [
        REQUESTS.c.request_id,
        REQUESTS.c.prior_school,
        REQUESTS.c.requesting_district,
        REQUESTS.c.created_at,
    ]
    # Flags the due-date work adds to ``requests`` (EC 49069.5, 48201(b)), when present.
    extra = [
        REQUESTS.c[name] for name in ("foster_youth", "discipline_requested") if name in REQUESTS.c
    ]
    query = (
        select(*columns, *extra)
        .where(
            REQUESTS.c.direction == Direction.INBOUND.value,
            REQUESTS.c.status == Status.PENDING.value,
            REQUESTS.c.approved.is_(None),
        )
        .order_by(REQUESTS.c.created_at)
    )
    with reading(bind) as conn:
        return [
            WaitingRequest(
                request_id=row["request_id"],
                prior_school=row["prior_school"],
                requesting_district=row["requesting_district"],
                received_at=row["created_at"],
                foster_youth=bool(row.get("foster_youth") or False),
                discipline_requested=bool(row.get("discipline_requested") or False),
            )
            for row in conn.execute(query).mappings()
        ]
