"""Transfers: the sealed or received ciphertext's header, keys, state and counts.

One ``transfers`` row per transfer, on each side: OUTBOUND (we send) SEALING
then SEALED (``rt_server.store.spool`` writes it while sealing), INBOUND (we
receive) RECEIVING then RECEIVED. Its ciphertext is in ``transfer_chunks``
(``spool``). The flows read a ``Transfer`` (a value, never a row) and move the
states here, in their own units of work (``rt_server.store.units``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from rt_server.core.statuses import Direction, TransferState
from rt_server.store._db import Bind, reading
from rt_server.store.schema import TRANSFER_CHUNKS, TRANSFERS
from rt_server.store.units import Database

__all__ = [
    "Transfer",
    "close_outbound",
    "discard",
    "discard_if_empty",
    "inbound_transfer",
    "mark_received",
    "outbound_transfer",
    "received_transfer",
    "start_receiving",
    "transfer_id_taken",
]


@dataclass(frozen=True)
class Transfer:
    """A transfer as stored (the columns of ``transfers``)."""

    transfer_id: str
    request_id: str
    direction: Direction
    header: bytes  # a serialized, signed ``TransferHeader`` (empty while SEALING)
    header_signature: bytes
    wrapped_key: bytes
    ciphertext_bytes: int  # as the header announces
    received_offset: int  # bytes in the spool: received, or spooled by the sealing attempt
    trailer_signature: bytes | None
    ciphertext_sha512: bytes | None
    state: TransferState
    seal_attempt: str | None
    table_counts: str | None  # "TST=120,HIS=64" (``core.table_codes``)
    created_at: dt.datetime
    completed_at: dt.datetime | None


def _transfer(row: Any) -> Transfer | None:
    if row is None:
        return None
    values = dict(row._mapping)
    values["direction"] = Direction(values["direction"])
    values["state"] = TransferState(values["state"])
    return Transfer(**values)


# Built once (a statement built anew costs SQLAlchemy its cache key on every call).
_OUTBOUND_TRANSFER: Final = select(TRANSFERS).where(
    TRANSFERS.c.transfer_id == bindparam("transfer_id"),
    TRANSFERS.c.direction == Direction.OUTBOUND.value,
)
_INBOUND_TRANSFER: Final = select(TRANSFERS).where(
    TRANSFERS.c.transfer_id == bindparam("transfer_id"),
    TRANSFERS.c.direction == Direction.INBOUND.value,
)
_ANY_TRANSFER: Final = select(TRANSFERS.c.transfer_id).where(
    TRANSFERS.c.transfer_id == bindparam("transfer_id")
)


def outbound_transfer(bind: Bind, transfer_id: str) -> Transfer | None:
    """The transfer we send under ``transfer_id``, if one is (being) sealed."""
    with reading(bind) as conn:
        return _transfer(conn.execute(_OUTBOUND_TRANSFER, {"transfer_id": transfer_id}).first())


def inbound_transfer(bind: Bind, transfer_id: str) -> Transfer | None:
    """The transfer we receive under ``transfer_id``, whatever its state."""
    with reading(bind) as conn:
        return _transfer(conn.execute(_INBOUND_TRANSFER, {"transfer_id": transfer_id}).first())


def received_transfer(bind: Bind, transfer_id: str | None) -> Transfer | None:
    """The transfer ``transfer_id`` once RECEIVED (None before, or for no id)."""
    with reading(bind) as conn:
        row = conn.execute(
            select(TRANSFERS).where(
                TRANSFERS.c.transfer_id == transfer_id,
                TRANSFERS.c.state == TransferState.RECEIVED.value,
            )
        ).first()
    return _transfer(row)


def transfer_id_taken(bind: Bind, transfer_id: str) -> bool:
    """Whether any transfer, of either side, has this id."""
    with reading(bind) as conn:
        return conn.execute(_ANY_TRANSFER, {"transfer_id": transfer_id}).first() is not None


def start_receiving(
    conn: Connection,
    *,
    transfer_id: str,
    request_id: str,
    header: bytes,
    header_signature: bytes,
    wrapped_key: bytes,
    ciphertext_bytes: int,
    table_counts: str,
    now: dt.datetime,
) -> None:
    """A RECEIVING transfer with nothing received yet, in the caller's unit."""
    conn.execute(
        insert(TRANSFERS),
        dict(
            transfer_id=transfer_id,
            request_id=request_id,
            direction=Direction.INBOUND.value,
            header=header,
            header_signature=header_signature,
            wrapped_key=wrapped_key,
            ciphertext_bytes=ciphertext_bytes,
            received_offset=0,
            state=TransferState.RECEIVING.value,
            table_counts=table_counts,
            created_at=now,
        ),
    )


def mark_received(
    conn: Connection,
    transfer_id: str,
    *,
    ciphertext_bytes: int,
    trailer_signature: bytes,
    ciphertext_sha512: bytes,
    now: dt.datetime,
) -> None:
    """The transfer, all of it there and verified, RECEIVED, in the caller's unit."""
    conn.execute(
        update(TRANSFERS).where(TRANSFERS.c.transfer_id == transfer_id),
        dict(
            state=TransferState.RECEIVED.value,
            received_offset=ciphertext_bytes,
            trailer_signature=trailer_signature,
            ciphertext_sha512=ciphertext_sha512,
            completed_at=now,
        ),
    )


def close_outbound(conn: Connection, transfer_id: str, now: dt.datetime) -> None:
    """A delivered transfer: its spool deleted, its completion time kept (the first one).

    In the caller's unit (the one that records the receipt).
    """
    conn.execute(delete(TRANSFER_CHUNKS).where(TRANSFER_CHUNKS.c.transfer_id == transfer_id))
    conn.execute(
        update(TRANSFERS).where(
            TRANSFERS.c.transfer_id == transfer_id, TRANSFERS.c.completed_at.is_(None)
        ),
        dict(completed_at=now),
    )


def discard(db: Database, transfer_id: str) -> None:
    """Forget the transfer and every byte of it (one transaction)."""
    with db.begin() as conn:
        conn.execute(delete(TRANSFER_CHUNKS).where(TRANSFER_CHUNKS.c.transfer_id == transfer_id))
        conn.execute(delete(TRANSFERS).where(TRANSFERS.c.transfer_id == transfer_id))


def discard_if_empty(db: Database, transfer_id: str) -> None:
    """Drop a transfer still RECEIVING with no byte stored (whoever started it)."""
    with db.begin() as conn:
        conn.execute(
            delete(TRANSFERS).where(
                TRANSFERS.c.transfer_id == transfer_id,
                TRANSFERS.c.direction == Direction.INBOUND.value,
                TRANSFERS.c.state == TransferState.RECEIVING.value,
                TRANSFERS.c.received_offset == 0,
            )
        )
