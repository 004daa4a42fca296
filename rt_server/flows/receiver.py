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
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Final

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from protos.rt.v1 import common_pb2, peer_pb2, records_pb2
from rt_client import transfer as rtx
from rt_client.crypto import envelope
from rt_client.errors import (
    Conflict,
    Duplicate,
    IntegrityError,
    InvalidInput,
    PeerAuthError,
    RecordsTransferError,
    WrongStatus,
)
from rt_client.ids import RequestId, is_uuid, parse_transfer_id
from rt_server.core import validate
from rt_server.core.statuses import Action
from rt_server.flows.district import District, load_peer_request, set_request
from rt_server.flows.sender import parse_counts
from rt_server.store import request_status
from rt_server.store.schema import TRANSFER_CHUNKS, TRANSFERS

log = logging.getLogger("rt_server.flows.receiver")


def delivery_offset(d: District, transfer_id: str, peer: str) -> peer_pb2.DeliveryOffset:
    """How much of the peer's transfer ``transfer_id`` we hold durably (0: none).

    Raises ``InvalidInput`` for an id that is not a transfer id (before it is
    used anywhere), ``PeerAuthError`` for another district's transfer.
    """
    transfer_id = parse_transfer_id(transfer_id)
    with d.reading() as conn:
        row = conn.execute(
            select(TRANSFERS).where(
                TRANSFERS.c.transfer_id == transfer_id, TRANSFERS.c.direction == "INBOUND"
            )
        ).first()
        if row is None:
            return peer_pb2.DeliveryOffset(transfer_id=transfer_id, offset=0)
        load_peer_request(conn, row.request_id, "OUTBOUND", peer)
        return peer_pb2.DeliveryOffset(
            transfer_id=transfer_id, offset=row.received_offset, complete=row.state == "RECEIVED"
        )


def receive_delivery(
    d: District, frames: Iterator[peer_pb2.DeliveryFrame], peer: str
) -> common_pb2.SignedEnvelope:
    first = next(frames, None)
    if first is None or first.WhichOneof("frame") != "start":
        raise InvalidInput("a delivery must start with its header")
    start = first.start
    if start.header.signer_district != peer:
        # A district named in a message must be the TLS peer (DESIGN.md section 3).
        raise PeerAuthError(f"district {peer} sent a transfer header signed as another district")
    sender = d.entry_of(peer)
    header, digest = rtx.open_header(
        start.header,
        sender=peer,
        sender_signing_key=sender.signing_public_key,
        receiver=d.code,
        receiver_key_id=d.identity.hpke_key.public_key().key_id(),
        max_bytes=d.limits.max_transfer_bytes,
    )
    if len(start.wrapped_key) > 4096:
        raise InvalidInput("the wrapped key is too long")
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
        with d.engine.begin() as conn:
            existing = _admit(d, conn, header, start, peer)
            if existing is None:
                _start_receiving(conn, header, start, d.clock())
    if existing is not None and existing.state == "RECEIVED":
        # A re-send after a lost receipt: answer again, change nothing.
        return _receipt(d, existing)
    held: list[bytes] = []  # a buffered delivery's frames
    offset = start.offset
    trailer: bytes | None = None
    frames_left = (header.ciphertext_bytes - offset) // d.limits.min_frame_bytes + 2
    try:
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
                if buffered:
                    held.append(data)
                else:
                    _store_frame(d, header.transfer_id, offset, data)
                offset += len(data)
            elif kind == "trailer" and trailer is None:
                trailer = frame.trailer.signature
            else:
                raise InvalidInput("unexpected frame in a delivery")
        if trailer is not None and offset != header.ciphertext_bytes:
            raise InvalidInput("the delivery's trailer came before all of its bytes")
    except InvalidInput:
        # The sender broke the protocol (it did not merely stop): keep nothing it
        # sent, so no bytes of a malformed transfer linger here and a corrected
        # re-send starts clean. A stream that is cut keeps its frames instead.
        if not buffered:
            _discard(d, header.transfer_id)
        raise
    except Exception:
        # Cut (or cut off by gRPC, e.g. a frame over its size limit) before a
        # byte arrived: nothing is worth keeping for a resume, so nothing stays.
        if not buffered:
            _discard_if_empty(d, header.transfer_id)
        raise
    if trailer is None:
        # The stream stopped early (a half-close looks the same as a cut that
        # gRPC has not reported yet): what arrived is kept for the sender to
        # resume from; an empty start is not worth keeping.
        if not buffered:
            _discard_if_empty(d, header.transfer_id)
        raise InvalidInput("the delivery ended before its trailer")

    def ciphertext() -> Iterable[bytes]:
        return held if buffered else stored_ciphertext(d, header.transfer_id)

    try:
        counts, sha512 = _verify(
            d, header, digest, start.wrapped_key, trailer, sender.signing_public_key, ciphertext
        )
    except RecordsTransferError:
        # Bad bytes from the sender: keep nothing of them, so a corrected re-send starts clean.
        if not buffered:
            _discard(d, header.transfer_id)
        raise
    now = d.clock()
    with d.engine.begin() as conn:
        if buffered:
            # Checked again under the write lock: another stream of this transfer
            # may have been received meanwhile.
            existing = _admit(d, conn, header, start, peer)
            if existing is not None:
                if existing.state == "RECEIVED":
                    return _receipt(d, existing)
                raise Conflict("another delivery of this transfer is under way")
            _start_receiving(conn, header, start, now)
            chunk_offset = 0
            for seq, data in enumerate(held):
                conn.execute(
                    insert(TRANSFER_CHUNKS),
                    dict(transfer_id=header.transfer_id, seq=seq, offset=chunk_offset, data=data),
                )
                chunk_offset += len(data)
        conn.execute(
            update(TRANSFERS).where(TRANSFERS.c.transfer_id == header.transfer_id),
            dict(
                state="RECEIVED",
                received_offset=header.ciphertext_bytes,
                trailer_signature=trailer,
                ciphertext_sha512=sha512,
                completed_at=now,
            ),
        )
        rows = sum(counts.values())
        if load_peer_request(conn, header.request_id, "OUTBOUND", peer).status == "QUEUED":
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
        set_request(conn, header.request_id, now, transfer_id=header.transfer_id)
        row = _transfer(conn, header.transfer_id)
    return _receipt(d, row)


def _admit(  # type: ignore[no-untyped-def]
    d: District,
    conn: Connection,
    header: records_pb2.TransferHeader,
    start: peer_pb2.DeliveryStart,
    peer: str,
):
    """Whether this delivery may go on; the transfer we hold of it already, if any.

    A RECEIVED transfer (a re-send after a lost receipt) is returned as it is;
    one still RECEIVING must be resumed from exactly where it stopped.
    """
    request = load_peer_request(conn, header.request_id, "OUTBOUND", peer)
    # Checked before anything of the transfer is stored. A re-send or a resume
    # carries the header as first sent, however long ago: it cannot predate the request.
    validate.peer_time(
        "the transfer header's created-at",
        header.created_at,
        d.clock(),
        not_before=request.created_at,
    )
    existing = _transfer(conn, header.transfer_id)
    if existing is not None and existing.request_id != header.request_id:
        raise IntegrityError()
    if existing is not None and existing.state == "RECEIVED":
        if existing.header != start.header.body:
            raise Duplicate("transfer already received")
        return existing
    if request.status not in ("QUEUED", "PENDING"):
        raise WrongStatus(f"request is {request.status}; it takes no delivery")
    if request.transfer_id and request.transfer_id != header.transfer_id:
        raise InvalidInput("the transfer id is not the one the prior district approved")
    if existing is None:
        if start.offset != 0:
            raise WrongStatus("resume offset does not match what is held")
        if _transfer_id_taken(conn, header.transfer_id):
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
    conn: Connection,
    header: records_pb2.TransferHeader,
    start: peer_pb2.DeliveryStart,
    now: datetime,
) -> None:
    conn.execute(
        insert(TRANSFERS),
        dict(
            transfer_id=header.transfer_id,
            request_id=header.request_id,
            direction="INBOUND",
            header=start.header.body,
            header_signature=start.header.signature,
            wrapped_key=start.wrapped_key,
            ciphertext_bytes=header.ciphertext_bytes,
            received_offset=0,
            state="RECEIVING",
            table_counts=",".join(
                f"{common_pb2.TableCode.Name(c.table)}={c.rows}" for c in header.tables
            ),
            created_at=now,
        ),
    )


def _transfer_id_taken(conn: Connection, transfer_id: str) -> bool:
    return conn.execute(_ANY_TRANSFER, {"transfer_id": transfer_id}).first() is not None


def _transfer(conn: Connection, transfer_id: str):  # type: ignore[no-untyped-def]
    return conn.execute(_INBOUND_TRANSFER, {"transfer_id": transfer_id}).first()


# Built once (a statement built anew costs SQLAlchemy its cache key on every call).
_ANY_TRANSFER: Final = select(TRANSFERS.c.transfer_id).where(
    TRANSFERS.c.transfer_id == bindparam("transfer_id")
)
_INBOUND_TRANSFER: Final = select(TRANSFERS).where(
    TRANSFERS.c.transfer_id == bindparam("transfer_id"), TRANSFERS.c.direction == "INBOUND"
)


def _store_frame(d: District, transfer_id: str, offset: int, data: bytes) -> None:
    """One durable frame: the bytes and the new offset commit together.

    The offset moves first, guarded: of two streams racing to store the same
    bytes (an old one still finishing, a retry already resuming) exactly one
    moves it, and the other gets ``Conflict`` (retry) before it writes a byte.
    """
    with d.engine.begin() as conn:
        moved = conn.execute(
            update(TRANSFERS)
            .where(TRANSFERS.c.transfer_id == transfer_id, TRANSFERS.c.received_offset == offset)
            .values(received_offset=offset + len(data))
        ).rowcount
        if moved != 1:
            raise Conflict("another delivery of this transfer is under way")
        seq = conn.execute(
            select(func.count())
            .select_from(TRANSFER_CHUNKS)
            .where(TRANSFER_CHUNKS.c.transfer_id == transfer_id)
        ).scalar_one()
        conn.execute(
            insert(TRANSFER_CHUNKS),
            dict(transfer_id=transfer_id, seq=seq, offset=offset, data=data),
        )


def stored_ciphertext(d: District, transfer_id: str) -> Iterable[bytes]:
    """The ciphertext as received, piece by piece (constant memory)."""
    with d.reading() as conn:
        result = conn.execution_options(yield_per=4).execute(
            select(TRANSFER_CHUNKS.c.data)
            .where(TRANSFER_CHUNKS.c.transfer_id == transfer_id)
            .order_by(TRANSFER_CHUNKS.c.seq)
        )
        for (data,) in result:
            yield data


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
    batches = rtx.decrypt_batches(header, digest, wrapped_key, d.identity.hpke_key, ciphertext())
    for batch in batches:
        _table, rows = validate.check_batch(batch)  # validate_batch's checks, no row dicts
        counts[batch.table] = counts.get(batch.table, 0) + rows
    return counts, ciphertext_sha512


def _discard(d: District, transfer_id: str) -> None:
    with d.engine.begin() as conn:
        conn.execute(delete(TRANSFER_CHUNKS).where(TRANSFER_CHUNKS.c.transfer_id == transfer_id))
        conn.execute(delete(TRANSFERS).where(TRANSFERS.c.transfer_id == transfer_id))


def _discard_if_empty(d: District, transfer_id: str) -> None:
    """Drop a transfer still RECEIVING with no byte stored (whoever started it)."""
    with d.engine.begin() as conn:
        conn.execute(
            delete(TRANSFERS).where(
                TRANSFERS.c.transfer_id == transfer_id,
                TRANSFERS.c.direction == "INBOUND",
                TRANSFERS.c.state == "RECEIVING",
                TRANSFERS.c.received_offset == 0,
            )
        )


def _receipt(d: District, row) -> common_pb2.SignedEnvelope:  # type: ignore[no-untyped-def]
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
