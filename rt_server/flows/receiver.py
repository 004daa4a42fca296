"""Receiving a transfer, at the requesting district (B).

``DeliverRecords`` frames arrive as: start (signed header, wrapped key, resume
offset), ciphertext frames, trailer. B verifies the header's signature before
parsing it, checks it against the request it is for, then stores ciphertext
durably frame by frame (so a cut delivery resumes at ``received_offset``) --
except a small one (``buffered_delivery_bytes``, one of a sender's frames),
held in memory until it verifies and stored in the one transaction that
receives it: a cut one starts over, which costs less than two more commits.
Nothing counts as received until the whole ciphertext is there, the trailer
signature verifies, every chunk decrypts and every row validates; then, in one
transaction, the transfer is RECEIVED and the request DATA_RECEIVED. The
ciphertext stays encrypted at rest until import.

A format version 2 transfer (its first frame's signature covers the wrapped
key, DESIGN.md section 5) is decrypted and validated frame by frame as it
arrives, a frame before it is stored: a bad one is refused at once. Version 1
is checked as before: trailer first, then decrypt.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from protos.rt.v1 import common_pb2, peer_pb2, records_pb2
from rt_client import transfer as rtx
from rt_client.crypto import envelope
from rt_client.errors import (
    Conflict,
    Duplicate,
    IntegrityError,
    InvalidInput,
    RecordsTransferError,
    WrongStatus,
)
from rt_client.ids import DistrictCode, RequestId, TransferId, is_uuid, parse_transfer_id
from rt_client.signed_messages import signed_at, verify_by_keys
from rt_server.core import validate
from rt_server.core.statuses import Action, Direction, Status, TransferState
from rt_server.core.table_codes import format_counts, parse_counts
from rt_server.flows.claims import require_claimed
from rt_server.flows.district import District, load_peer_request
from rt_server.store import request_status, requests, spool, transfers, units
from rt_server.store.transfers import Transfer

log = logging.getLogger("rt_server.flows.receiver")


def delivery_offset(d: District, transfer_id: str, peer: DistrictCode) -> peer_pb2.DeliveryOffset:
    """How much of the peer's transfer ``transfer_id`` we hold durably (0: none).

    Raises ``InvalidInput`` for an id that is not a transfer id (before it is
    used anywhere), ``PeerAuthError`` for another district's transfer.
    """
    transfer_id = parse_transfer_id(transfer_id)
    with d.reading() as conn:
        row = transfers.inbound_transfer(conn, transfer_id)
        if row is None:
            return peer_pb2.DeliveryOffset(transfer_id=transfer_id, offset=0)
        load_peer_request(conn, RequestId(row.request_id), Direction.OUTBOUND, peer)
        return peer_pb2.DeliveryOffset(
            transfer_id=transfer_id,
            offset=row.received_offset,
            complete=row.state is TransferState.RECEIVED,
        )


def receive_delivery(
    d: District, frames: Iterator[peer_pb2.DeliveryFrame], peer: DistrictCode
) -> common_pb2.SignedEnvelope:
    """Receive, verify and store a transfer from ``peer``; returns our signed receipt.

    Raises ``InvalidInput`` (a broken protocol), ``PeerAuthError`` (a header
    signed as another district, a request the peer is not party to),
    ``IntegrityError`` (bytes that do not verify), ``Conflict`` (another stream
    of the transfer under way: retry), ``Duplicate`` and ``WrongStatus``.
    """
    first = next(frames, None)
    started = time.monotonic()
    if first is None or first.WhichOneof("frame") != "start":
        raise InvalidInput("a delivery must start with its header")
    start = first.start
    require_claimed(start.header.signer_district, peer, "the signer of the transfer header")
    sender = d.entry_of(peer)
    if len(start.wrapped_key) > 4096:
        raise InvalidInput("the wrapped key is too long")

    def open_header(key: bytes) -> tuple[records_pb2.TransferHeader, bytes]:
        return rtx.open_header(
            start.header,
            sender=peer,
            sender_signing_key=key,
            receiver=d.code,
            receiver_key_id=d.hpke_key_ids(),
            wrapped_key=start.wrapped_key,
            max_bytes=d.limits.max_transfer_bytes,
        )

    # Sealed before the sender rotated its signing key: its previous key, for a
    # transfer created before that key was retired (rt_client.signed_messages).
    (header, digest), sender_key = verify_by_keys(
        open_header,
        sender.signing_public_key,
        sender.previous_signing_keys,
        d.clock(),
        lambda opened: signed_at(opened[0]),
    )
    if not (is_uuid(header.transfer_id) and is_uuid(header.request_id)):
        raise InvalidInput("the transfer header's ids are not UUIDs")
    # A small delivery from the start waits in memory and is stored in the one
    # transaction that receives it; a larger one (or a resume) is stored frame
    # by frame as it comes, so a cut delivery resumes where it stopped.
    buffered = start.offset == 0 and header.ciphertext_bytes <= d.limits.buffered_delivery_bytes
    if buffered:
        with d.reading() as conn:
            existing = _admit(d, conn, header, start, peer)
        buffered = existing is None
    else:
        with d.writing() as conn:
            existing = _admit(d, conn, header, start, peer)
            if existing is None:
                _start_receiving(conn, header, start, d.clock())
    if existing is not None and existing.state is TransferState.RECEIVED:
        # A re-send after a lost receipt: answer again, change nothing.
        return _receipt(d, existing)
    held: list[bytes] = []  # a buffered delivery's frames
    offset = start.offset
    trailer: bytes | None = None
    frames_left = (header.ciphertext_bytes - offset) // d.limits.min_frame_bytes + 2
    # Version 2: decrypted and validated as it arrives (DESIGN.md section 5);
    # version 1 (in flight before the upgrade): only once its trailer verifies.
    opener: _Opener | None = None
    try:
        if header.format_version == rtx.FORMAT_VERSION:
            opener = _Opener(d, header, digest, start.wrapped_key)
            if offset:
                # A resume: what we hold already is decrypted again to catch up.
                for data in spool.stored_ciphertext(d.engine, header.transfer_id):
                    opener.feed(data)
                if opener.received != offset:
                    raise Conflict("resume offset does not match what is held")
        for frame in frames:
            kind = frame.WhichOneof("frame")
            if kind == "ciphertext" and trailer is None:
                data = frame.ciphertext
                if not data or len(data) > d.limits.max_frame_bytes:
                    raise InvalidInput("a ciphertext frame is empty or too large")
                frames_left -= 1
                if frames_left < 0:
                    raise InvalidInput("the delivery comes in more frames than its size allows")
                if offset + len(data) > header.ciphertext_bytes:
                    raise InvalidInput("the delivery is longer than its header declares")
                if opener is not None:
                    opener.feed(data)  # before it is stored: bad bytes are never kept
                if buffered:
                    held.append(data)
                else:
                    _store_frame(d, TransferId(header.transfer_id), offset, data)
                offset += len(data)
            elif kind == "trailer" and trailer is None:
                trailer = frame.trailer.signature
            else:
                raise InvalidInput("unexpected frame in a delivery")
        if trailer is not None and offset != header.ciphertext_bytes:
            raise InvalidInput("the delivery's trailer came before all of its bytes")
    except (InvalidInput, IntegrityError):
        # The sender broke the protocol (it did not merely stop): keep nothing it
        # sent, so no bytes of a malformed transfer linger here and a corrected
        # re-send starts clean. A stream that is cut keeps its frames instead.
        if not buffered:
            transfers.discard(d.engine, header.transfer_id)
        raise
    except Exception:
        # Cut (or cut off by gRPC, e.g. a frame over its size limit) before a
        # byte arrived: nothing is worth keeping for a resume, so nothing stays.
        if not buffered:
            transfers.discard_if_empty(d.engine, header.transfer_id)
        raise
    if trailer is None:
        # The stream stopped early (a half-close looks the same as a cut that
        # gRPC has not reported yet): what arrived is kept for the sender to
        # resume from; an empty start is not worth keeping.
        if not buffered:
            transfers.discard_if_empty(d.engine, header.transfer_id)
        raise InvalidInput("the delivery ended before its trailer")

    def ciphertext() -> Iterable[bytes]:
        return held if buffered else spool.stored_ciphertext(d.engine, header.transfer_id)

    try:
        if opener is not None:
            counts, sha512 = opener.finish(trailer, sender_key)
        else:
            counts, sha512 = _verify(
                d, header, digest, start.wrapped_key, trailer, sender_key, ciphertext
            )
    except RecordsTransferError:
        d.metrics.refused()
        # Bad bytes from the sender: keep nothing of them, so a corrected re-send starts clean.
        if not buffered:
            transfers.discard(d.engine, header.transfer_id)
        raise
    now = d.clock()
    request_id = RequestId(header.request_id)
    with d.writing() as conn:
        if buffered:
            # Checked again under the write lock: another stream of this transfer
            # may have been received meanwhile.
            existing = _admit(d, conn, header, start, peer)
            if existing is not None:
                if existing.state is TransferState.RECEIVED:
                    return _receipt(d, existing)
                raise Conflict("another delivery of this transfer is under way")
            _start_receiving(conn, header, start, now)
            spool.insert_chunks(conn, header.transfer_id, held)
        transfers.mark_received(
            conn,
            header.transfer_id,
            ciphertext_bytes=header.ciphertext_bytes,
            trailer_signature=trailer,
            ciphertext_sha512=sha512,
            now=now,
        )
        rows = sum(counts.values())
        request = load_peer_request(conn, request_id, Direction.OUTBOUND, peer)
        if request.status is Status.QUEUED:
            # A's receipt for the request was lost, but A sending the records
            # shows it has the request: accept it first.
            request_status.set_status(
                conn, RequestId(header.request_id), Action.ACCEPT, actor=f"district {peer}", now=now
            )
        request_status.set_status(
            conn,
            RequestId(header.request_id),
            Action.RECEIVE_DATA,
            actor=f"district {peer}",
            reason=f"Received {rows} rows; ready for review.",
            now=now,
        )
        requests.set_transfer_id(conn, request_id, header.transfer_id, now)
        row = transfers.inbound_transfer(conn, header.transfer_id)
    assert row is not None  # stored in this very transaction
    d.metrics.received(received_bytes=offset - start.offset, rows=rows, started=started)
    return _receipt(d, row)


def _admit(
    d: District,
    conn: units.Unit,
    header: records_pb2.TransferHeader,
    start: peer_pb2.DeliveryStart,
    peer: DistrictCode,
) -> Transfer | None:
    """Whether this delivery may go on; the transfer we hold of it already, if any.

    A RECEIVED transfer (a re-send after a lost receipt) is returned as it is;
    one still RECEIVING must be resumed from exactly where it stopped.
    """
    request = load_peer_request(conn, RequestId(header.request_id), Direction.OUTBOUND, peer)
    # Checked before anything of the transfer is stored. A re-send or a resume
    # carries the header as first sent, however long ago: it cannot predate the request.
    validate.peer_time(
        "the transfer header's created-at",
        header.created_at,
        d.clock(),
        not_before=request.created_at,
    )
    existing = transfers.inbound_transfer(conn, header.transfer_id)
    if existing is not None and existing.request_id != header.request_id:
        raise IntegrityError()
    if existing is not None and existing.state is TransferState.RECEIVED:
        if existing.header != start.header.body:
            raise Duplicate("transfer already received")
        return existing
    if request.status not in (Status.QUEUED, Status.PENDING):
        raise WrongStatus(f"request is {request.status}; it takes no delivery")
    if request.transfer_id and request.transfer_id != header.transfer_id:
        raise InvalidInput("the transfer id is not the one the prior district approved")
    if existing is None:
        if start.offset != 0:
            raise WrongStatus("resume offset does not match what is held")
        if transfers.transfer_id_taken(conn, header.transfer_id):
            # One of our own outbound transfers has this id: never mix or discard it.
            raise InvalidInput("the transfer id is already in use here")
    elif existing.header != start.header.body or existing.wrapped_key != start.wrapped_key:
        raise IntegrityError()
    elif start.offset != existing.received_offset:
        # Most likely the previous stream's last frame landed after the sender
        # asked for the offset: retryable, the sender asks again.
        raise Conflict("resume offset does not match what is held")
    return existing


def _start_receiving(
    conn: units.Unit,
    header: records_pb2.TransferHeader,
    start: peer_pb2.DeliveryStart,
    now: datetime,
) -> None:
    transfers.start_receiving(
        conn,
        transfer_id=header.transfer_id,
        request_id=header.request_id,
        header=start.header.body,
        header_signature=start.header.signature,
        wrapped_key=start.wrapped_key,
        ciphertext_bytes=header.ciphertext_bytes,
        table_counts=format_counts((c.table, c.rows) for c in header.tables),
        now=now,
    )


def _store_frame(d: District, transfer_id: TransferId, offset: int, data: bytes) -> None:
    """One durable frame (``spool.store_frame``; raises ``Conflict`` if another stream races)."""
    spool.store_frame(d.engine, transfer_id, offset, data)


def _verify(
    d: District,
    header: records_pb2.TransferHeader,
    digest: bytes,
    wrapped_key: bytes,
    trailer: bytes,
    sender_key: bytes,
    ciphertext: Callable[[], Iterable[bytes]],
) -> tuple[dict[int, int], bytes]:
    # Verify before parsing: the sender's signature over header, key and
    # ciphertext first; only then decrypt, and validate every row.
    sha = hashlib.sha512()
    for data in ciphertext():
        sha.update(data)
    ciphertext_sha512 = sha.digest()
    rtx.verify_trailer(digest, wrapped_key, ciphertext_sha512, trailer, sender_key)
    counts: dict[int, int] = {}
    batches = rtx.decrypt_batches(
        header, digest, wrapped_key, d.hpke_key_for(header.receiver_key_id), ciphertext()
    )
    for batch in batches:
        _table, rows = validate.check_batch(batch)  # validate_batch's checks, no row dicts
        counts[batch.table] = counts.get(batch.table, 0) + rows
    return counts, ciphertext_sha512


class _Opener:
    """A version 2 delivery decrypted and every row validated as its frames arrive.

    Nothing it saw is trusted or committed before :meth:`finish` (the final
    chunk and the trailer verified, the row counts those of the header).
    """

    def __init__(
        self, d: District, header: records_pb2.TransferHeader, digest: bytes, wrapped_key: bytes
    ) -> None:
        self._stream = rtx.StreamOpener(
            header, digest, wrapped_key, d.hpke_key_for(header.receiver_key_id)
        )
        self.counts: dict[int, int] = {}

    @property
    def received(self) -> int:
        return self._stream.received

    def feed(self, data: bytes) -> None:
        self._tally(self._stream.feed(data))

    def finish(self, trailer: bytes, sender_key: bytes) -> tuple[dict[int, int], bytes]:
        last, sha512 = self._stream.finish(trailer, sender_key)
        self._tally(last)
        return self.counts, sha512

    def _tally(self, batches: Iterable[records_pb2.RecordBatch]) -> None:
        for batch in batches:
            _table, rows = validate.check_batch(batch)  # validate_batch's checks, no row dicts
            self.counts[batch.table] = self.counts.get(batch.table, 0) + rows


def _receipt(d: District, row: Transfer) -> common_pb2.SignedEnvelope:
    """Our signed receipt for the RECEIVED transfer ``row``."""
    assert row.ciphertext_sha512 is not None and row.completed_at is not None  # RECEIVED
    header = records_pb2.TransferHeader.FromString(row.header)
    receipt = peer_pb2.DeliveryReceipt(
        transfer_id=row.transfer_id,
        request_id=row.request_id,
        sender_district=header.sender_district,
        receiver_district=d.code,
        ciphertext_sha512=row.ciphertext_sha512,
        tables=[
            common_pb2.TableCount(table=t, rows=n)
            for t, n in sorted(parse_counts(row.table_counts).items())
        ],
    )
    receipt.received_at.FromDatetime(row.completed_at)
    return d.sign(envelope.LABEL_DELIVERY_RECEIPT, receipt)
