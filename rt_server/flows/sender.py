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
there (``store.spool.SpoolWriter``: a one-chunk transfer is spooled in one transaction). An attempt
that dies mid-seal (its replica killed) is replaced by the next one: nothing
of it was ever sent, so starting over exposes nothing. Once SEALED a transfer
is never encrypted again: a delivery cut anywhere resumes from B's offset.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator

import grpc

from protos.rt.v1 import common_pb2, peer_pb2, records_pb2
from rt_client.crypto import envelope
from rt_client.errors import IntegrityError, PeerUnavailable
from rt_client.ids import DistrictCode, RequestId, TransferId
from rt_client.peers import call_peer
from rt_client.transfer import SealedTransfer, seal_transfer
from rt_server import _testhooks
from rt_server.core import validate
from rt_server.core.statuses import Action, Direction, Status, TransferState
from rt_server.core.table_codes import parse_counts
from rt_server.core.tables import parse_table_list
from rt_server.flows import outbox
from rt_server.flows.district import District
from rt_server.store import (
    disclosures,
    parent_notices,
    request_status,
    requests,
    spool,
    transfers,
)
from rt_server.store.spool import SpoolWriter

log = logging.getLogger("rt_server.flows.sender")


def seal(d: District, request_id: RequestId, transfer_id: TransferId) -> bool:
    """Encrypt the approved tables once into the spool, and remember the result.

    Does nothing for a transfer already SEALED. Returns True when this call
    sealed it: then nothing of it can have been sent yet. Raises ``ClaimLost``
    if another attempt took the transfer over meanwhile.
    """
    existing = transfers.outbound_transfer(d.engine, transfer_id)
    if existing is not None and existing.state is TransferState.SEALED:
        return False
    row = requests.load_request(d.engine, request_id, direction=Direction.INBOUND)
    receiver = d.entry_of(DistrictCode(row.requesting_district))
    tables = parse_table_list(row.tables_approved)

    student = row.local_student_id
    assert student is not None  # an approved request names its student

    def batches() -> Iterator[records_pb2.RecordBatch]:
        yield from d.records_source.batches(student, tables)

    writer = SpoolWriter(d.engine, transfer_id, request_id, d.limits.frame_bytes, d.clock)
    sealed: SealedTransfer = seal_transfer(
        batches=batches,
        transfer_id=transfer_id,
        request_id=request_id,
        sender=d.code,
        receiver=receiver,
        signing_key=d.signing_key,
        out=writer,
        created_at=d.clock(),
    )
    return writer.finish(sealed)


def deliver(d: District, item: outbox.OutboxItem, done: outbox.Outbox) -> None:
    """Outbox handler: seal if needed, stream from B's offset, verify the receipt."""
    started = time.monotonic()
    transfer_id = TransferId(item.payload.decode())
    request_id = item.request_id
    fresh = seal(d, request_id, transfer_id)
    sealed = transfers.outbound_transfer(d.engine, transfer_id)
    assert sealed is not None and sealed.state is TransferState.SEALED
    trailer_signature, ciphertext_sha512 = sealed.trailer_signature, sealed.ciphertext_sha512
    assert trailer_signature is not None and ciphertext_sha512 is not None  # SEALED
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
        for data in spool.spooled_ciphertext(d.engine, transfer_id, offset):
            _testhooks.frame_delay()
            yield peer_pb2.DeliveryFrame(ciphertext=data)
            sent += len(data)
            _progress(d, item.request_id, sent, sealed.ciphertext_bytes)
        if sent != sealed.ciphertext_bytes:
            # The spool went while we streamed: another replica delivered it.
            raise outbox.ClaimLost(f"transfer {transfer_id} was delivered by another worker")
        yield peer_pb2.DeliveryFrame(trailer=peer_pb2.TransferTrailer(signature=trailer_signature))

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
        or receipt.ciphertext_sha512 != ciphertext_sha512
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
    with d.writing() as conn:
        # Locked: another replica may be finishing the same delivery (its lease
        # ran out while it waited for B); only one of them records it.
        row = requests.load_request(conn, request_id, direction=Direction.INBOUND, lock=True)
        if row.status is Status.PENDING:
            rows = sum(counts.values())
            request_status.set_status(
                conn,
                RequestId(item.request_id),
                Action.SEND,
                actor=row.decided_by or "delivery worker",
                reason=f"Delivered {rows} rows; receipt verified.",
                now=now,
            )
            requests.set_delivery_bytes(conn, request_id, now, done=sealed.ciphertext_bytes)
            assert row.local_student_id is not None  # approved: the student is confirmed
            # 34 CFR 99.32: what was disclosed is what the sealed transfer carried
            # (its header's counts, which B's receipt confirmed just above), not
            # every table approved: a table the student has no rows of was not sent.
            disclosure = disclosures.write_disclosure(
                conn,
                student_local_id=row.local_student_id,
                receiving_district=row.requesting_district,
                receiving_school=row.requesting_school,
                counts={common_pb2.TableCode.Name(t): n for t, n in counts.items()},
                request_id=RequestId(row.request_id),
                acting_staff=row.decided_by or "unknown",
                now=now,
            )
            if d.parent_notice_owed:
                parent_notices.owe(conn, disclosure, now)
        # B holds it, receipt verified: the spool has done its job.
        transfers.close_outbound(conn, transfer_id, now)
        done.complete(conn, item)
    d.metrics.delivered(
        sent_bytes=sealed.ciphertext_bytes - offset, rows=sum(counts.values()), started=started
    )
    log.info(
        "transfer %s delivered to %s (%d bytes, sha512 %s...)",
        transfer_id,
        item.to_district,
        sealed.ciphertext_bytes,
        hashlib.sha256(ciphertext_sha512).hexdigest()[:12],
    )


def _progress(d: District, request_id: RequestId, sent: int, total: int) -> None:
    """Delivery progress for 'rt show' / 'rt approve --wait' (best effort, every ~8 MiB).

    Not after the last frame: the receipt's transaction records that.
    """
    if sent >= total or sent % (8 * d.limits.frame_bytes) >= d.limits.frame_bytes:
        return
    requests.record_delivery_progress(d.engine, request_id, sent)
