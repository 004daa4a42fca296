"""A request's thread: the messages registrars of the two districts write each other.

Ours is stored and queued (the signed ``ThreadMessage``, as an outbox
'message') in one transaction; a peer's is stored once (its id again is a
replay or a re-send: ``Duplicate``). The thread also holds the system messages
the store writes on each change (``audit.system_message``), which stay here.
The audit row says who posted to which request, never what was written.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Final

from sqlalchemy import insert, select, update

from rt_client.errors import Duplicate, NotFound
from rt_client.ids import MessageId, RequestId, parse_district_code, parse_uuid
from rt_server.core.inputs import parse_actor, parse_text
from rt_server.core.model import ThreadMessageRecord
from rt_server.store._db import Bind, aware, reading, transaction
from rt_server.store._rows import load_request, message_from_row
from rt_server.store.audit import write_audit
from rt_server.store.outbox_queue import enqueue
from rt_server.store.schema import STAFF_LEN, THREAD_MESSAGES

__all__ = ["MAX_MESSAGE_LEN", "add_thread_message", "list_messages", "mark_message_delivered"]

MAX_MESSAGE_LEN: Final = 4000


def add_thread_message(
    bind: Bind,
    request_id: RequestId,
    *,
    author: str,
    body: str,
    from_district: str,
    message_id: str | None = None,
    sent_at: dt.datetime | None = None,
    envelope: bytes | None = None,
    delivered: bool = False,
    now: dt.datetime | None = None,
) -> ThreadMessageRecord:
    """Add a registrar's message to a request's thread.

    Ours: pass ``envelope`` (the signed ``ThreadMessage`` with this
    ``message_id`` and ``sent_at``); it is queued as an outbox 'message' to the
    other district. A peer's (verified): no envelope, ``delivered=True``.
    Raises ``NotFound`` (no such request), ``InvalidInput``, ``Duplicate``
    (this message id is already in the thread: a replay or re-send).
    """
    at = aware(now)
    who = parse_actor(author, STAFF_LEN)
    text = parse_text(body, "message", MAX_MESSAGE_LEN, required=True)
    district = parse_district_code(from_district)
    mid = parse_uuid(message_id or str(uuid.uuid4()), "message id")
    with transaction(bind) as conn:
        row = load_request(conn, request_id)
        exists = conn.execute(
            select(THREAD_MESSAGES.c.message_id).where(THREAD_MESSAGES.c.message_id == mid)
        ).first()
        if exists is not None:
            raise Duplicate("message already received")
        conn.execute(
            insert(THREAD_MESSAGES),
            dict(
                message_id=mid,
                request_id=request_id,
                from_district=district,
                author=who,
                body=text,
                sent_at=aware(sent_at) if sent_at is not None else at,
                system=False,
                delivered=delivered,
            ),
        )
        if envelope is not None:
            enqueue(
                conn,
                kind="message",
                request_id=request_id,
                to_district=row["other_district"],
                payload=envelope,
                now=at,
            )
        write_audit(
            conn,
            actor=who if envelope is not None else f"district {district}",
            action="message.post" if envelope is not None else "message.receive",
            request_id=request_id,
            now=at,
        )
        found = (
            conn.execute(select(THREAD_MESSAGES).where(THREAD_MESSAGES.c.message_id == mid))
            .mappings()
            .one()
        )
        return message_from_row(found)


def mark_message_delivered(bind: Bind, message_id: MessageId) -> None:
    """Note that the other district acknowledged our message. Raises ``NotFound``."""
    with transaction(bind) as conn:
        result = conn.execute(
            update(THREAD_MESSAGES)
            .where(THREAD_MESSAGES.c.message_id == message_id)
            .values(delivered=True)
        )
        if result.rowcount != 1:
            raise NotFound("no message with this id")


def list_messages(bind: Bind, request_id: RequestId) -> list[ThreadMessageRecord]:
    """A request's thread, oldest first. Raises ``NotFound``."""
    with reading(bind) as conn:
        load_request(conn, request_id)
        rows = (
            conn.execute(
                select(THREAD_MESSAGES)
                .where(THREAD_MESSAGES.c.request_id == request_id)
                .order_by(THREAD_MESSAGES.c.sent_at, THREAD_MESSAGES.c.id)
            )
            .mappings()
            .all()
        )
    return [message_from_row(r) for r in rows]
