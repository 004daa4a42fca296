"""The message thread of a request: both registrars write, both see.

A registrar's message is stored locally and queued, signed, for the other
district; the other district verifies it (signer is the TLS peer, the request
is one it shares with us) and stores it once, whatever the re-sends.
"""

from __future__ import annotations

from sqlalchemy import insert, select

from protos.rt.v1 import common_pb2, peer_pb2
from rt_client.crypto import envelope
from rt_client.errors import Duplicate, InvalidInput, PeerAuthError
from rt_server import outbox
from rt_server.db.schema import THREAD_MESSAGES
from rt_server.district import District, audit, first_time, load_peer_request, load_request, new_id

MAX_MESSAGE_CHARS = 4000


def post_message(d: District, *, request_id: str, body: str, actor: str) -> str:
    body = body.strip()
    if not body or len(body) > MAX_MESSAGE_CHARS:
        raise InvalidInput(f"a message must have 1 to {MAX_MESSAGE_CHARS} characters")
    now = d.clock()
    message_id = new_id()
    with d.engine.begin() as conn:
        request = load_request(conn, request_id)
        message = peer_pb2.ThreadMessage(
            message_id=message_id,
            request_id=request_id,
            from_district=d.code,
            to_district=request.other_district,
            author=actor,
            body=body,
        )
        message.sent_at.FromDatetime(now)
        signed = d.sign(envelope.LABEL_MESSAGE, message)
        conn.execute(
            insert(THREAD_MESSAGES).values(
                message_id=message_id, request_id=request_id, from_district=d.code, author=actor[:100],
                body=body, sent_at=now, system=False, delivered=False,
            )
        )
        outbox.enqueue(conn, kind="message", request_id=request_id, to_district=request.other_district,
                       payload=signed.SerializeToString(), now=now)
        audit(conn, now, actor, "message.post", request_id=request_id)
    d.wake_worker()
    return message_id


def receive_message(d: District, signed: common_pb2.SignedEnvelope, peer: str) -> common_pb2.SignedEnvelope:
    message = d.open_from(envelope.LABEL_MESSAGE, signed, peer, peer_pb2.ThreadMessage)
    if message.from_district != peer or message.to_district != d.code:
        raise PeerAuthError(f"message from {peer} names other districts")
    if not message.body or len(message.body) > MAX_MESSAGE_CHARS or len(message.author) > 100:
        raise InvalidInput("message empty or too long")
    now = d.clock()
    with d.engine.begin() as conn:
        row = conn.execute(select(THREAD_MESSAGES.c.message_id).where(THREAD_MESSAGES.c.message_id == message.message_id)).first()
        if row is not None or not first_time(conn, message.message_id, "message", now):
            raise Duplicate("message already received")
        request = _shared_request(conn, message.request_id, peer)
        conn.execute(
            insert(THREAD_MESSAGES).values(
                message_id=message.message_id, request_id=request.request_id, from_district=peer,
                author=message.author or "unknown", body=message.body, sent_at=now, system=False, delivered=True,
            )
        )
    return d.ack(message.message_id)


def _shared_request(conn, request_id: str, peer: str):  # type: ignore[no-untyped-def]
    try:
        return load_peer_request(conn, request_id, "INBOUND", peer)
    except PeerAuthError:
        return load_peer_request(conn, request_id, "OUTBOUND", peer)


def mark_delivered(d: District, item: outbox.OutboxItem) -> None:
    signed = common_pb2.SignedEnvelope.FromString(item.payload)
    message = peer_pb2.ThreadMessage.FromString(signed.body)
    with d.engine.begin() as conn:
        conn.execute(
            THREAD_MESSAGES.update().where(THREAD_MESSAGES.c.message_id == message.message_id).values(delivered=True)
        )


__all__ = ["mark_delivered", "post_message", "receive_message", "new_id"]
