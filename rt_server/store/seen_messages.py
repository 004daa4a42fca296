"""The peers' messages already processed: a re-sent or replayed one is recognised.

Decisions, import notices, receipts and thread messages are re-sent until
acknowledged; each id is remembered once, in the transaction that acts on it,
so acting twice is impossible (DESIGN.md section 6).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select

from rt_client.errors import Duplicate
from rt_client.ids import MessageId
from rt_server.store._db import Bind, aware, transaction
from rt_server.store.schema import SEEN_MESSAGES

__all__ = ["remember_message"]


def remember_message(
    bind: Bind, message_id: MessageId, kind: str, *, now: dt.datetime | None = None
) -> None:
    """Record that the decision/notice/receipt/message ``message_id`` was processed.

    Raises ``Duplicate`` if it was already: a replay or a re-send, to be
    acknowledged and otherwise ignored.
    """
    try:
        with transaction(bind) as conn:
            seen = conn.execute(
                select(SEEN_MESSAGES.c.message_id).where(SEEN_MESSAGES.c.message_id == message_id)
            ).first()
            if seen is not None:
                raise Duplicate(f"{kind} already received")
            conn.execute(
                insert(SEEN_MESSAGES), dict(message_id=message_id, kind=kind, at=aware(now))
            )
    except sa_exc.IntegrityError as error:
        # Two replicas took the same re-send at once: the other one recorded it
        # first (PostgreSQL; SQLite has one writer). Same answer as a replay.
        raise Duplicate(f"{kind} already received") from error
