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
from rt_client.crypto.hpke import HpkePrivateKey
from rt_client.directory import Directory, DirectoryEntry
from rt_client.errors import IntegrityError
from rt_client.identity import DistrictIdentity
from rt_client.ids import DistrictCode, RequestId
from rt_client.peers import PeerClients
from rt_client.signed_messages import open_message_by, sign_message
from rt_server.core import due_dates
from rt_server.core.model import RequestRecord
from rt_server.core.statuses import Direction
from rt_server.flows.claims import require_claimed
from rt_server.flows.metrics import DistrictMetrics
from rt_server.flows.outbox import Outbox, RetryPolicy
from rt_server.flows.streams import OutgoingStreams
from rt_server.sis.seam import OwnTables, RecordSink, RecordSource
from rt_server.store import requests, units
from rt_server.store.outbox_queue import OutboxClaim

# The database could not complete a unit of work (busy, full, unreachable): it
# rolled back and may succeed if tried again (the servicers say so).
DatabaseFailure = units.DatabaseFailure

M = TypeVar("M", bound=Message)
# The one clock of the district: the server's real one by default (``utc_now``);
# tests inject one they move (the law's clocks, rt_server.core.due_dates, read it).
Clock = due_dates.Clock


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
    law_enforcement_contact: str = ""  # EC 49068.6 alerts (district.toml)
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
    # Counters and histograms (``flows.metrics``), served if [metrics] listen is set.
    metrics: DistrictMetrics = field(default_factory=DistrictMetrics)
    # 34 CFR 99.34(a)(1): each disclosure owes the parent a notice (the annual
    # notice does not cover transfers: annual_notice_covers_transfers = false).
    parent_notice_owed: bool = False

    # HPKE keys kept after a rotation (key id -> key, rt_client.keystore); the
    # current key is always added. Replaced whole by the server when keys change.
    retired_hpke_keys: dict[str, HpkePrivateKey] = field(default_factory=dict)

    def hpke_key_ids(self) -> set[str]:
        """The ids of every HPKE key a transfer to us may be sealed to."""
        return {self.identity.hpke_key.public_key().key_id(), *self.retired_hpke_keys}

    def hpke_key_for(self, key_id: str) -> HpkePrivateKey:
        """Our HPKE key with ``key_id`` (current or retired). Raises ``IntegrityError``."""
        current = self.identity.hpke_key
        if current.public_key().key_id() == key_id:
            return current
        key = self.retired_hpke_keys.get(key_id)
        if key is None:
            raise IntegrityError()  # as every other failure to open: the same answer
        return key

    # The SIS seam (DESIGN.md section 9): where the rows we send are read and
    # where imported rows are written (None: our own tables, the default).
    source: RecordSource | None = None
    sink: RecordSink | None = None

    def __post_init__(self) -> None:
        own = OwnTables(self.engine)
        if self.source is None:
            self.source = own
        if self.sink is None:
            self.sink = own

    @property
    def records_source(self) -> RecordSource:
        assert self.source is not None  # set in __post_init__
        return self.source

    @property
    def records_sink(self) -> RecordSink:
        assert self.sink is not None  # set in __post_init__
        return self.sink

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
        """Verify a message as ``district``'s, then parse it: by its current directory
        key, or by a key it retired for items dated before it was retired.

        Raises ``PeerAuthError`` when the envelope names another signer (a
        district named in a message must be the peer, DESIGN.md section 3) and
        ``IntegrityError`` when it does not verify or parse.
        """
        require_claimed(signed.signer_district, district, "the signer of a message from the peer")
        entry = self.directory.lookup(district)
        # By its current key, or by a key it retired for items dated before then.
        return open_message_by(
            label,
            signed,
            signer=district,
            public_key=entry.signing_public_key,
            previous=entry.previous_signing_keys,
            now=self.clock(),
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
