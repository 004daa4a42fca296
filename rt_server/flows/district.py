"""The district server's state: everything a flow needs, built from its config.

``District`` is passed to every flow function (``requester``, ``responder``,
``receiver``, ``sender``, ``review``, ``messages``). It holds no request state
of its own: all of that is in the database, so any replica can pick up any
work. The flows reach the database only through ``rt_server.store``: the
``engine`` here is the handle they pass it, and ``units`` the transactions.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message

from protos.rt.v1 import common_pb2, peer_pb2
from rt_client.crypto import envelope
from rt_client.directory import Directory, DirectoryEntry
from rt_client.identity import DistrictIdentity
from rt_client.ids import DistrictCode, RequestId
from rt_client.peers import PeerClients
from rt_client.signed_messages import open_message, sign_message
from rt_server.core.model import RequestRecord
from rt_server.core.statuses import Direction
from rt_server.flows.claims import require_claimed
from rt_server.flows.outbox import Outbox, RetryPolicy
from rt_server.flows.streams import OutgoingStreams
from rt_server.store import requests, units
from rt_server.store.outbox_queue import OutboxClaim

# The database could not complete a unit of work (busy, full, unreachable): it
# rolled back and may succeed if tried again (the servicers say so).
DatabaseFailure = units.DatabaseFailure

M = TypeVar("M", bound=Message)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Limits:
    """Bounds on what a peer may send (DESIGN.md section 8)."""

    max_transfer_bytes: int = 2 * 1024 * 1024 * 1024
    max_frame_bytes: int = 2 * 1024 * 1024
    # Frames may be smaller than what we send, but not so small that a peer
    # makes us write once per byte: a delivery may come in at most one frame
    # per this many bytes (plus the short first and last frames of a resume).
    min_frame_bytes: int = 4096
    frame_bytes: int = 64 * 16400  # what we send: 64 Cobblestone chunks, about 1 MiB
    # A delivery up to this size is held in memory until it verifies, then
    # stored in the one transaction that receives it (a cut one starts over);
    # a larger one is stored frame by frame, so a cut one resumes.
    buffered_delivery_bytes: int = 1024 * 1024
    # Our requests expire this long after they are created (a peer's may live
    # up to ``validate.MAX_REQUEST_LIFETIME``; its times are bounded there too).
    request_ttl_days: int = 30
    rpc_timeout_seconds: float = 15.0
    # A delivery's deadline grows with its size, from this floor at this pace.
    delivery_timeout_floor_seconds: float = 60.0
    delivery_min_bytes_per_second: int = 1024 * 1024


@dataclass
class District:
    code: DistrictCode
    engine: units.Database
    identity: DistrictIdentity
    directory: Directory
    peers: PeerClients
    clock: Clock = utc_now
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: Limits = field(default_factory=Limits)
    outbox: Outbox | None = None  # set by the server once the worker exists
    wake_worker: Callable[[], None] = lambda: None
    # Outbox items a change queues are claimed for this server's worker in the
    # change's own transaction (None: left for any worker to claim) ...
    outbox_claim: Callable[[], OutboxClaim | None] = lambda: None
    # ... and once it has committed, handed to the worker's threads ...
    hand_over: Callable[[RequestId], None] = lambda request_id: None
    # ... or sent now, in the caller's thread, with the request's other due items.
    run_outbox_now: Callable[[RequestId], None] = lambda request_id: None
    # Deliveries we are streaming, cancelled (to resume later) when the server stops.
    outgoing: OutgoingStreams = field(default_factory=OutgoingStreams)

    def reading(self) -> units.Unit:
        """A read-only unit (use it as ``with``): on SQLite it does not take the write lock."""
        return units.read(self.engine)

    def writing(self) -> AbstractContextManager[units.Unit]:
        """One durable transaction, for the store calls that must commit together."""
        return units.write(self.engine)

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        return self.identity.signing_key

    def sign(self, label: bytes, message: Message) -> common_pb2.SignedEnvelope:
        return sign_message(label, message, self.code, self.identity.signing_key)

    def open_from(
        self,
        label: bytes,
        signed: common_pb2.SignedEnvelope,
        district: DistrictCode,
        message_type: type[M],
    ) -> M:
        """Verify a message as ``district``'s (by its current directory key), then parse it.

        Raises ``PeerAuthError`` when the envelope names another signer (a
        district named in a message must be the peer, DESIGN.md section 3) and
        ``IntegrityError`` when it does not verify or parse.
        """
        require_claimed(signed.signer_district, district, "the signer of a message from the peer")
        entry = self.directory.lookup(district)
        return open_message(
            label,
            signed,
            signer=district,
            public_key=entry.signing_public_key,
            message_type=message_type,
        )

    def ack(self, message_id: str) -> common_pb2.SignedEnvelope:
        """Our signed acknowledgement of a peer's message."""
        ack = peer_pb2.Ack(message_id=message_id, district=self.code)
        ack.at.FromDatetime(self.clock())
        return self.sign(envelope.LABEL_ACK, ack)

    def entry_of(self, district: DistrictCode) -> DirectoryEntry:
        return self.directory.lookup(district)


# --- the request a peer names --------------------------------------------------


def load_peer_request(
    conn: units.Unit, request_id: RequestId, direction: Direction, peer: DistrictCode
) -> RequestRecord:
    """A request the peer is party to (on our ``direction`` side).

    Another district's request is "not found" to it: raises ``PeerAuthError``
    for both, as the claim check does.
    """
    request = requests.find_request(conn, request_id, direction)
    other = None if request is None else request.other_district
    require_claimed(other, peer, f"the other district of request {request_id}")
    assert request is not None  # refused just above otherwise
    return request
