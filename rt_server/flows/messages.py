"""The message thread of a request: both registrars write, both see.

A registrar's message is stored locally and queued, signed, for the other
district; the other district verifies it (signer is the TLS peer, the request
is one it shares with us) and stores it once, whatever the re-sends.
"""

from __future__ import annotations

from protos.rt.v1 import common_pb2, peer_pb2
from rt_client.crypto import envelope
from rt_client.errors import PeerAuthError
from rt_client.ids import DistrictCode, MessageId, RequestId, parse_message_id, parse_request_id
from rt_server.core import validate
from rt_server.core.statuses import Direction
from rt_server.flows import outbox
from rt_server.flows.claims import require_claimed
from rt_server.flows.district import District, load_peer_request, new_id
from rt_server.store import requests, thread_messages


def post_message(d: District, *, request_id: RequestId, body: str, actor: str) -> MessageId:
    """Add our registrar's message to the thread and queue it for the other district.

    Raises ``NotFound`` and ``InvalidInput`` (an empty or too long message).
    """
    now = d.clock()
    request = requests.get_request(d.engine, RequestId(request_id))
    message = peer_pb2.ThreadMessage(
        message_id=new_id(),
        request_id=request_id,
        from_district=d.code,
        to_district=request.other_district,
        author=actor,
        body=body,
    )
    message.sent_at.FromDatetime(now)
    signed = d.sign(envelope.LABEL_MESSAGE, message)
    thread_messages.add_thread_message(
        d.engine,
        RequestId(request_id),
        author=actor,
        body=body,
        from_district=d.code,
        message_id=message.message_id,
        sent_at=now,
        envelope=signed.SerializeToString(),
        now=now,
    )
    d.wake_worker()
    return MessageId(message.message_id)


def receive_message(
    d: District, signed: common_pb2.SignedEnvelope, peer: DistrictCode
) -> common_pb2.SignedEnvelope:
    """A verified message from the other district of a request we share. Returns our Ack.

    Raises ``PeerAuthError`` (districts named that are not the peer and us, or
    a request we do not share), ``InvalidInput``, ``Duplicate``.
    """
    message = d.open_from(envelope.LABEL_MESSAGE, signed, peer, peer_pb2.ThreadMessage)
    require_claimed(message.from_district, peer, "the message's sender")
    require_claimed(message.to_district, d.code, "the message's addressee")
    # Ids and the time are checked before any is used (a query, a log line) or stored.
    message_id = parse_message_id(message.message_id)
    request_id = parse_request_id(message.request_id)
    now = d.clock()
    with d.reading() as conn:
        try:
            request = load_peer_request(conn, request_id, Direction.INBOUND, peer)
        except PeerAuthError:
            request = load_peer_request(conn, request_id, Direction.OUTBOUND, peer)
    # Kept in the thread at the time it arrived; its own time must still be sane.
    validate.peer_time("the message's sent-at", message.sent_at, now, not_before=request.created_at)
    thread_messages.add_thread_message(
        d.engine,
        request_id,
        author=message.author or "unknown",
        body=message.body,
        from_district=peer,
        message_id=message_id,
        delivered=True,
        now=now,
    )
    return d.ack(message_id)


def mark_delivered(d: District, item: outbox.OutboxItem) -> None:
    signed = common_pb2.SignedEnvelope.FromString(item.payload)
    thread_messages.mark_message_delivered(
        d.engine, MessageId(peer_pb2.ThreadMessage.FromString(signed.body).message_id)
    )
