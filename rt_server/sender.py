"""Delivery of an approved transfer, at the prior district (A).

The outbox's ``delivery`` item seals the student's rows once into a spool file
(``rt_client.transfer.seal_transfer``: encrypted for B, signed by A), asks B
how much it already holds, streams the rest in ~1 MiB frames and verifies B's
signed receipt. Only then, in one transaction, the request becomes SENT and the
FERPA record of disclosure (34 CFR 99.32) is written; the spool goes after
the commit. A delivery cut anywhere resumes from B's offset, never re-encrypts.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import insert, select

from protos.rt.v1 import common_pb2, peer_pb2, records_pb2
from rt_client.crypto import envelope
from rt_client.errors import IntegrityError
from rt_client.transfer import SealedTransfer, seal_transfer
from rt_server import outbox
from rt_server.core import export, store
from rt_server.core.statuses import Action
from rt_server.core.tables import parse_table_list
from rt_server.db.schema import REQUESTS, TRANSFERS
from rt_server.district import District, load_request, set_request
from rt_server.peers import call_peer

log = logging.getLogger("rt_server.sender")


def spool_path(d: District, transfer_id: str) -> Path:
    return d.spool_dir / f"{transfer_id}.rtx"


def _sealed_row(d: District, transfer_id: str):  # type: ignore[no-untyped-def]
    with d.reading() as conn:
        return conn.execute(
            select(TRANSFERS).where(
                TRANSFERS.c.transfer_id == transfer_id, TRANSFERS.c.direction == "OUTBOUND"
            )
        ).first()


def seal(d: District, request_id: str, transfer_id: str) -> None:
    """Encrypt the approved tables once into the spool, and remember the result."""
    if _sealed_row(d, transfer_id) is not None and spool_path(d, transfer_id).exists():
        return
    with d.reading() as conn:
        row = load_request(conn, request_id, direction="INBOUND")
    receiver = d.entry_of(row.requesting_district)
    tables = parse_table_list(row.tables_approved)
    d.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    final = spool_path(d, transfer_id)
    partial = final.with_suffix(".partial")

    def batches() -> Iterator[records_pb2.RecordBatch]:
        with d.reading() as conn:
            yield from export.iter_batches(conn, row.local_student_id, tables)

    with open(partial, "wb") as out:
        sealed: SealedTransfer = seal_transfer(
            batches=batches,
            transfer_id=transfer_id,
            request_id=request_id,
            sender=d.code,
            receiver=receiver,
            signing_key=d.signing_key,
            out=out,
            created_at=d.clock(),
        )
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, final)
    now = d.clock()
    header = common_pb2.SignedEnvelope()
    header.CopyFrom(sealed.header)
    with d.engine.begin() as conn:
        conn.execute(TRANSFERS.delete().where(TRANSFERS.c.transfer_id == transfer_id))
        conn.execute(
            insert(TRANSFERS).values(
                transfer_id=transfer_id,
                request_id=request_id,
                direction="OUTBOUND",
                header=sealed.header.body,
                header_signature=sealed.header.signature,
                wrapped_key=sealed.wrapped_key,
                ciphertext_bytes=sealed.ciphertext_bytes,
                received_offset=0,
                trailer_signature=sealed.trailer_signature,
                ciphertext_sha512=sealed.ciphertext_sha512,
                state="SEALED",
                table_counts=_counts_text(sealed.tables),
                created_at=now,
            )
        )
        set_request(
            conn,
            request_id,
            now,
            delivery_bytes_total=sealed.ciphertext_bytes,
            delivery_bytes_done=0,
        )


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
    seal(d, item.request_id, transfer_id)
    sealed = _sealed_row(d, transfer_id)
    assert sealed is not None
    stub = d.peers.stub(item.to_district)
    position = call_peer(
        lambda: stub.GetDeliveryOffset(
            peer_pb2.DeliveryOffsetRequest(transfer_id=transfer_id),
            timeout=d.limits.rpc_timeout_seconds,
        )
    )
    offset = sealed.ciphertext_bytes if position.complete else position.offset
    if offset > sealed.ciphertext_bytes:
        offset = 0  # B holds something we did not send; start over and let it refuse
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
        with open(spool_path(d, transfer_id), "rb") as spool:
            spool.seek(offset)
            while True:
                data = spool.read(d.limits.frame_bytes)
                if not data:
                    break
                yield peer_pb2.DeliveryFrame(ciphertext=data)
                sent += len(data)
                _progress(d, item.request_id, sent)
        yield peer_pb2.DeliveryFrame(
            trailer=peer_pb2.TransferTrailer(signature=sealed.trailer_signature)
        )

    remaining = sealed.ciphertext_bytes - offset
    timeout = (
        d.limits.delivery_timeout_floor_seconds + remaining / d.limits.delivery_min_bytes_per_second
    )
    reply = call_peer(lambda: stub.DeliverRecords(frames(), timeout=timeout))
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
    with d.engine.begin() as conn:
        row = load_request(conn, item.request_id, direction="INBOUND")
        if row.status == "PENDING":
            rows = sum(counts.values())
            store.set_status(
                conn,
                item.request_id,
                Action.SEND,
                actor=row.decided_by or "delivery worker",
                reason=f"Delivered {rows} rows; receipt verified.",
                now=now,
            )
            set_request(conn, item.request_id, now, delivery_bytes_done=sealed.ciphertext_bytes)
            store.write_disclosure(
                conn,
                student_local_id=row.local_student_id,
                receiving_district=row.requesting_district,
                receiving_school=row.requesting_school,
                tables=parse_table_list(row.tables_approved),
                request_id=row.request_id,
                acting_staff=row.decided_by or "unknown",
                now=now,
            )
        done.complete(conn, item)
    spool_path(d, transfer_id).unlink(missing_ok=True)
    log.info(
        "transfer %s delivered to %s (%d bytes, sha512 %s...)",
        transfer_id,
        item.to_district,
        sealed.ciphertext_bytes,
        hashlib.sha256(sealed.ciphertext_sha512).hexdigest()[:12],
    )


def _progress(d: District, request_id: str, sent: int) -> None:
    """Delivery progress for 'rt show' / 'rt approve --wait' (best effort, every ~8 MiB)."""
    if sent % (8 * d.limits.frame_bytes) >= d.limits.frame_bytes:
        return
    with d.engine.begin() as conn:
        conn.execute(
            REQUESTS.update()
            .where(REQUESTS.c.request_id == request_id)
            .values(delivery_bytes_done=sent)
        )
