"""Delivery of an approved transfer, at the prior district (A).

The outbox's ``delivery`` item seals the student's rows once into the spool
(``rt_client.transfer.seal_transfer``: encrypted for B, signed by A), asks B
how much it already holds, streams the rest in ~1 MiB frames and verifies B's
signed receipt. Only then, in one transaction, the request becomes SENT, the
FERPA record of disclosure (34 CFR 99.32) is written and the spool is deleted.

The spool is in the database (``transfer_chunks``), not on one server's disk,
so that any replica can resume any delivery. Sealing writes it a chunk per
transaction (memory stays constant) under a SEALING transfer row owned by one
attempt; the row becomes SEALED, with the last chunk, only once every chunk is
there (``SpoolWriter``: a one-chunk transfer is spooled in one transaction). An attempt
that dies mid-seal (its replica killed) is replaced by the next one: nothing
of it was ever sent, so starting over exposes nothing. Once SEALED a transfer
is never encrypted again: a delivery cut anywhere resumes from B's offset.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Final

import grpc
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection, Engine

from protos.rt.v1 import common_pb2, peer_pb2, records_pb2
from rt_client.crypto import envelope
from rt_client.errors import IntegrityError, PeerUnavailable
from rt_client.ids import RequestId
from rt_client.peers import call_peer
from rt_client.transfer import SealedTransfer, seal_transfer
from rt_server import _testhooks
from rt_server.core import validate
from rt_server.core.statuses import Action
from rt_server.core.tables import parse_table_list
from rt_server.flows import outbox
from rt_server.flows.district import District, load_request, new_id, set_request
from rt_server.store import READ_ONLY, disclosures, export, request_status
from rt_server.store.engine import begin_not_durable
from rt_server.store.schema import REQUESTS, TRANSFER_CHUNKS, TRANSFERS

log = logging.getLogger("rt_server.flows.sender")


def _sealed_row(d: District, transfer_id: str):  # type: ignore[no-untyped-def]
    with d.reading() as conn:
        return conn.execute(_OUTBOUND_TRANSFER, {"transfer_id": transfer_id}).first()


# Built once (a statement built anew costs SQLAlchemy its cache key on every call).
_CHUNK_AT: Final = (
    select(TRANSFER_CHUNKS.c.seq, TRANSFER_CHUNKS.c.offset)
    .where(
        TRANSFER_CHUNKS.c.transfer_id == bindparam("transfer_id"),
        TRANSFER_CHUNKS.c.offset <= bindparam("offset"),
    )
    .order_by(TRANSFER_CHUNKS.c.offset.desc())
    .limit(1)
)
_CHUNK_DATA: Final = select(TRANSFER_CHUNKS.c.data).where(
    TRANSFER_CHUNKS.c.transfer_id == bindparam("transfer_id"),
    TRANSFER_CHUNKS.c.seq == bindparam("seq"),
)
_OUTBOUND_TRANSFER: Final = select(TRANSFERS).where(
    TRANSFERS.c.transfer_id == bindparam("transfer_id"), TRANSFERS.c.direction == "OUTBOUND"
)


class SpoolWriter:
    """A ``CiphertextSink`` that spools into ``transfer_chunks`` under one sealing attempt.

    Every chunk but the last is exactly ``chunk_bytes`` long (one frame of the
    delivery), so at most one chunk is held in memory. The attempt's SEALING
    transfer row is created with the first chunk, and ``finish`` stores the
    last chunk in the transaction that makes the transfer SEALED: a transfer of
    one chunk (most are) is spooled in a single transaction. Chunks before the
    last commit ``NOT_DURABLE``: the SEALED commit is durable and makes them so
    (a SEALING transfer lost to a power failure is simply sealed again). Each
    chunk moves the spooled offset, guarded by the attempt: if another attempt
    has taken the transfer over, this one stops (``ClaimLost``).
    """

    def __init__(
        self,
        engine: Engine,
        transfer_id: str,
        request_id: str,
        chunk_bytes: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._transfer_id = transfer_id
        self._request_id = request_id
        self._chunk_bytes = chunk_bytes
        self._clock = clock
        self._attempt = new_id()
        self._started = False
        self._pending = bytearray()
        self._seq = 0
        self.offset = 0  # bytes spooled

    def write(self, data: bytes, /) -> int:
        self._pending += data
        # Strictly more than a chunk: the last one always waits for ``finish``.
        while len(self._pending) > self._chunk_bytes:
            self._store_chunk(bytes(self._pending[: self._chunk_bytes]))
            del self._pending[: self._chunk_bytes]
        return len(data)

    def finish(self, sealed: SealedTransfer) -> bool:
        """The last chunk, and the transfer SEALED, in one transaction.

        Returns False, storing nothing, if another attempt had sealed it already.
        """
        now = self._clock()
        with self._engine.begin() as conn:
            if not self._started and not self._start(conn):
                return False
            self._insert(conn, bytes(self._pending))
            done = conn.execute(
                update(TRANSFERS).where(
                    TRANSFERS.c.transfer_id == self._transfer_id,
                    TRANSFERS.c.state == "SEALING",
                    TRANSFERS.c.seal_attempt == self._attempt,
                    TRANSFERS.c.received_offset == sealed.ciphertext_bytes,
                ),
                dict(
                    header=sealed.header.body,
                    header_signature=sealed.header.signature,
                    wrapped_key=sealed.wrapped_key,
                    ciphertext_bytes=sealed.ciphertext_bytes,
                    trailer_signature=sealed.trailer_signature,
                    ciphertext_sha512=sealed.ciphertext_sha512,
                    state="SEALED",
                    seal_attempt=None,
                    table_counts=_counts_text(sealed.tables),
                    created_at=now,
                ),
            ).rowcount
            if done != 1:
                raise outbox.ClaimLost(f"transfer {self._transfer_id} is sealed by another attempt")
            set_request(
                conn,
                self._request_id,
                now,
                delivery_bytes_total=sealed.ciphertext_bytes,
                delivery_bytes_done=0,
            )
        self._pending.clear()
        return True

    def _store_chunk(self, data: bytes) -> None:
        with begin_not_durable(self._engine) as conn:
            if not self._started and not self._start(conn):
                raise outbox.ClaimLost(f"transfer {self._transfer_id} was sealed meanwhile")
            self._insert(conn, data)

    def _start(self, conn: Connection) -> bool:
        """Create this attempt's SEALING row; False if the transfer is SEALED already.

        An attempt that died mid-seal left a SEALING row and some chunks: nothing
        of them was sent, so they are discarded and this attempt starts over.
        """
        stale = conn.execute(
            select(TRANSFERS.c.state)
            .where(
                TRANSFERS.c.transfer_id == self._transfer_id,
                TRANSFERS.c.direction == "OUTBOUND",
            )
            .with_for_update()
        ).scalar()
        if stale == "SEALED":
            return False  # another replica finished it just now
        if stale is not None:
            conn.execute(
                delete(TRANSFER_CHUNKS).where(TRANSFER_CHUNKS.c.transfer_id == self._transfer_id)
            )
            conn.execute(delete(TRANSFERS).where(TRANSFERS.c.transfer_id == self._transfer_id))
        conn.execute(
            insert(TRANSFERS),
            dict(
                transfer_id=self._transfer_id,
                request_id=self._request_id,
                direction="OUTBOUND",
                header=b"",
                header_signature=b"",
                wrapped_key=b"",
                ciphertext_bytes=0,
                received_offset=0,
                state="SEALING",
                seal_attempt=self._attempt,
                created_at=self._clock(),
            ),
        )
        self._started = True
        return True

    def _insert(self, conn: Connection, data: bytes) -> None:
        moved = conn.execute(
            update(TRANSFERS)
            .where(
                TRANSFERS.c.transfer_id == self._transfer_id,
                TRANSFERS.c.state == "SEALING",
                TRANSFERS.c.seal_attempt == self._attempt,
                TRANSFERS.c.received_offset == self.offset,
            )
            .values(received_offset=self.offset + len(data))
        ).rowcount
        if moved != 1:
            raise outbox.ClaimLost(f"transfer {self._transfer_id} is sealed by another attempt")
        conn.execute(
            insert(TRANSFER_CHUNKS),
            dict(transfer_id=self._transfer_id, seq=self._seq, offset=self.offset, data=data),
        )
        self._seq += 1
        self.offset += len(data)


def seal(d: District, request_id: str, transfer_id: str) -> bool:
    """Encrypt the approved tables once into the spool, and remember the result.

    Does nothing for a transfer already SEALED. Returns True when this call
    sealed it: then nothing of it can have been sent yet. Raises ``ClaimLost``
    if another attempt took the transfer over meanwhile.
    """
    existing = _sealed_row(d, transfer_id)
    if existing is not None and existing.state == "SEALED":
        return False
    with d.reading() as conn:
        row = load_request(conn, request_id, direction="INBOUND")
    receiver = d.entry_of(row.requesting_district)
    tables = parse_table_list(row.tables_approved)

    def batches() -> Iterator[records_pb2.RecordBatch]:
        with d.reading() as conn:
            yield from export.iter_batches(conn, row.local_student_id, tables)

    spool = SpoolWriter(d.engine, transfer_id, request_id, d.limits.frame_bytes, d.clock)
    sealed: SealedTransfer = seal_transfer(
        batches=batches,
        transfer_id=transfer_id,
        request_id=request_id,
        sender=d.code,
        receiver=receiver,
        signing_key=d.signing_key,
        out=spool,
        created_at=d.clock(),
    )
    return spool.finish(sealed)


def spooled_ciphertext(engine: Engine, transfer_id: str, offset: int = 0) -> Iterator[bytes]:
    """The sealed ciphertext from ``offset`` on, one chunk per short read (constant memory).

    Each chunk is its own query rather than one cursor held open for the
    whole delivery: a slow receiver must not pin a database snapshot.
    """
    with engine.connect().execution_options(**READ_ONLY) as conn:
        first = conn.execute(_CHUNK_AT, {"transfer_id": transfer_id, "offset": offset}).first()
    seq, skip = (first.seq, offset - first.offset) if first is not None else (0, offset)
    while True:
        with engine.connect().execution_options(**READ_ONLY) as conn:
            data = conn.execute(_CHUNK_DATA, {"transfer_id": transfer_id, "seq": seq}).scalar()
        if data is None:
            return
        if skip:
            data, skip = data[skip:], max(0, skip - len(data))
        if data:
            yield bytes(data)
        seq += 1


def _counts_text(counts: dict[common_pb2.TableCode.ValueType, int]) -> str:
    return ",".join(f"{common_pb2.TableCode.Name(t)}={n}" for t, n in sorted(counts.items()))


def parse_counts(text: str | None) -> dict[common_pb2.TableCode.ValueType, int]:
    out: dict[common_pb2.TableCode.ValueType, int] = {}
    for part in (text or "").split(","):
        if part:
            name, _, n = part.partition("=")
            out[common_pb2.TableCode.Value(name)] = int(n)
    return out


def deliver(d: District, item: outbox.OutboxItem, done: outbox.Outbox) -> None:
    """Outbox handler: seal if needed, stream from B's offset, verify the receipt."""
    transfer_id = item.payload.decode()
    fresh = seal(d, item.request_id, transfer_id)
    sealed = _sealed_row(d, transfer_id)
    assert sealed is not None and sealed.state == "SEALED"
    if sealed.received_offset != sealed.ciphertext_bytes:
        # Sealed but not all spooled: cannot happen short of a damaged database.
        raise IntegrityError("the sealed transfer's spool is incomplete")
    stub = d.peers.stub(item.to_district)
    if fresh:
        offset = 0  # sealed just now: B cannot hold any of it, no need to ask
    else:
        position = call_peer(
            lambda: stub.GetDeliveryOffset(
                peer_pb2.DeliveryOffsetRequest(transfer_id=transfer_id),
                timeout=d.limits.rpc_timeout_seconds,
            )
        )
        offset = sealed.ciphertext_bytes if position.complete else position.offset
        if offset > sealed.ciphertext_bytes:
            offset = 0  # B holds something we did not send; start over and let it refuse
    if offset:
        log.info(
            "resuming transfer %s to %s at byte %d of %d",
            transfer_id, item.to_district, offset, sealed.ciphertext_bytes,
        )  # fmt: skip
    header = common_pb2.SignedEnvelope(
        body=sealed.header, signer_district=d.code, signature=sealed.header_signature
    )

    def frames() -> Iterator[peer_pb2.DeliveryFrame]:
        yield peer_pb2.DeliveryFrame(
            start=peer_pb2.DeliveryStart(
                header=header, wrapped_key=sealed.wrapped_key, offset=offset
            )
        )
        sent = offset
        for data in spooled_ciphertext(d.engine, transfer_id, offset):
            _testhooks.frame_delay()
            yield peer_pb2.DeliveryFrame(ciphertext=data)
            sent += len(data)
            _progress(d, item.request_id, sent, sealed.ciphertext_bytes)
        if sent != sealed.ciphertext_bytes:
            # The spool went while we streamed: another replica delivered it.
            raise outbox.ClaimLost(f"transfer {transfer_id} was delivered by another worker")
        yield peer_pb2.DeliveryFrame(
            trailer=peer_pb2.TransferTrailer(signature=sealed.trailer_signature)
        )

    remaining = sealed.ciphertext_bytes - offset
    timeout = (
        d.limits.delivery_timeout_floor_seconds + remaining / d.limits.delivery_min_bytes_per_second
    )
    call = stub.DeliverRecords.future(frames(), timeout=timeout)
    with d.outgoing.track(call):  # a shutdown cancels it; B keeps what it stored
        try:
            reply = call_peer(call.result)
        except grpc.FutureCancelledError as exc:
            raise PeerUnavailable(
                "the delivery was cut by this server's shutdown; it resumes on restart"
            ) from exc
    _testhooks.pause("delivery.after_reply")
    receipt = d.open_from(
        envelope.LABEL_DELIVERY_RECEIPT, reply, item.to_district, peer_pb2.DeliveryReceipt
    )
    counts = parse_counts(sealed.table_counts)
    if (
        receipt.transfer_id != transfer_id
        or receipt.request_id != item.request_id
        or receipt.sender_district != d.code
        or receipt.receiver_district != item.to_district
        or receipt.ciphertext_sha512 != sealed.ciphertext_sha512
        or {c.table: c.rows for c in receipt.tables if c.rows}
        != {t: n for t, n in counts.items() if n}
    ):
        raise IntegrityError("the delivery receipt does not match what was sent")
    now = d.clock()
    # A receipt sent again (ours was lost) keeps the time B first received the
    # transfer, which may be long ago; never before we sealed it.
    validate.peer_time(
        "the delivery receipt's received-at", receipt.received_at, now, not_before=sealed.created_at
    )
    with d.engine.begin() as conn:
        # Locked: another replica may be finishing the same delivery (its lease
        # ran out while it waited for B); only one of them records it.
        row = load_request(conn, item.request_id, direction="INBOUND", lock=True)
        if row.status == "PENDING":
            rows = sum(counts.values())
            request_status.set_status(
                conn,
                RequestId(item.request_id),
                Action.SEND,
                actor=row.decided_by or "delivery worker",
                reason=f"Delivered {rows} rows; receipt verified.",
                now=now,
            )
            set_request(conn, item.request_id, now, delivery_bytes_done=sealed.ciphertext_bytes)
            disclosures.write_disclosure(
                conn,
                student_local_id=row.local_student_id,
                receiving_district=row.requesting_district,
                receiving_school=row.requesting_school,
                tables=parse_table_list(row.tables_approved),
                request_id=row.request_id,
                acting_staff=row.decided_by or "unknown",
                now=now,
            )
        # B holds it, receipt verified: the spool has done its job.
        conn.execute(delete(TRANSFER_CHUNKS).where(TRANSFER_CHUNKS.c.transfer_id == transfer_id))
        conn.execute(
            update(TRANSFERS).where(
                TRANSFERS.c.transfer_id == transfer_id, TRANSFERS.c.completed_at.is_(None)
            ),
            dict(completed_at=now),
        )
        done.complete(conn, item)
    log.info(
        "transfer %s delivered to %s (%d bytes, sha512 %s...)",
        transfer_id,
        item.to_district,
        sealed.ciphertext_bytes,
        hashlib.sha256(sealed.ciphertext_sha512).hexdigest()[:12],
    )


def _progress(d: District, request_id: str, sent: int, total: int) -> None:
    """Delivery progress for 'rt show' / 'rt approve --wait' (best effort, every ~8 MiB).

    Not after the last frame: the receipt's transaction records that.
    """
    if sent >= total or sent % (8 * d.limits.frame_bytes) >= d.limits.frame_bytes:
        return
    with begin_not_durable(d.engine) as conn:
        conn.execute(
            REQUESTS.update()
            .where(REQUESTS.c.request_id == request_id)
            .values(delivery_bytes_done=sent)
        )


def adopt_file_spool(engine: Engine, spool_dir: Path, chunk_bytes: int) -> int:
    """Move spool files of a version before the database spool into ``transfer_chunks``.

    Before schema revision 0002 a sealed transfer waited for delivery in
    ``<data_dir>/spool/<transfer_id>.rtx``. ``rt db upgrade`` calls this after
    migrating, so those transfers are delivered from the database as sealed
    then, never encrypted again. A file whose transfer is not waiting (or whose
    size is not the sealed size) is left where it is. Returns how many were moved.
    """
    if not spool_dir.is_dir():
        return 0
    moved = 0
    for path in sorted(spool_dir.glob("*.rtx")):
        transfer_id = path.stem
        with engine.begin() as conn:
            row = conn.execute(
                select(TRANSFERS.c.ciphertext_bytes, TRANSFERS.c.received_offset)
                .where(
                    TRANSFERS.c.transfer_id == transfer_id,
                    TRANSFERS.c.direction == "OUTBOUND",
                    TRANSFERS.c.state == "SEALED",
                    TRANSFERS.c.completed_at.is_(None),
                )
                .with_for_update()
            ).first()
            if row is None or path.stat().st_size != row.ciphertext_bytes:
                log.warning("spool file %s has no sealed transfer waiting for it; left", path.name)
                continue
            conn.execute(
                delete(TRANSFER_CHUNKS).where(TRANSFER_CHUNKS.c.transfer_id == transfer_id)
            )
            with path.open("rb") as spool:
                offset = 0
                for seq, data in enumerate(iter(lambda: spool.read(chunk_bytes), b"")):
                    conn.execute(
                        insert(TRANSFER_CHUNKS),
                        dict(transfer_id=transfer_id, seq=seq, offset=offset, data=data),
                    )
                    offset += len(data)
            conn.execute(
                update(TRANSFERS)
                .where(TRANSFERS.c.transfer_id == transfer_id)
                .values(received_offset=offset)
            )
        path.unlink()
        moved += 1
    for partial in spool_dir.glob("*.partial"):
        partial.unlink()  # a seal that never finished: its transfer is sealed again
    return moved
