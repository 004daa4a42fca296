"""The spool: a transfer's ciphertext in ``transfer_chunks``, in and out, in constant memory.

The ciphertext is in the database, not on one server's disk, so that any
replica can resume any delivery. Outbound, ``SpoolWriter`` writes it while the
transfer is sealed and ``spooled_ciphertext`` streams it from a resume offset;
inbound, ``store_frame`` (or ``insert_chunks``, for a delivery held in memory)
stores what arrives and ``stored_ciphertext`` reads it back for review and
import. ``adopt_file_spool`` moves the spool files of an older version in.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from rt_client.errors import Conflict
from rt_client.transfer import SealedTransfer
from rt_server.core.statuses import Direction, TransferState
from rt_server.core.table_codes import format_counts
from rt_server.store.engine import READ_ONLY, begin_not_durable
from rt_server.store.outbox import ClaimLost
from rt_server.store.requests import set_delivery_bytes
from rt_server.store.schema import TRANSFER_CHUNKS, TRANSFERS
from rt_server.store.units import Database

__all__ = [
    "SpoolWriter",
    "adopt_file_spool",
    "insert_chunks",
    "spooled_ciphertext",
    "store_frame",
    "stored_ciphertext",
]

log = logging.getLogger("rt_server.store.spool")

_OUTBOUND: Final = Direction.OUTBOUND.value
_SEALING: Final = TransferState.SEALING.value
_SEALED: Final = TransferState.SEALED.value


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
        engine: Database,
        transfer_id: str,
        request_id: str,
        chunk_bytes: int,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._engine = engine
        self._transfer_id = transfer_id
        self._request_id = request_id
        self._chunk_bytes = chunk_bytes
        self._clock = clock
        self._attempt = str(uuid.uuid4())
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
        Raises ``ClaimLost`` if another attempt took the transfer over.
        """
        now = self._clock()
        with self._engine.begin() as conn:
            if not self._started and not self._start(conn):
                return False
            self._insert(conn, bytes(self._pending))
            done = conn.execute(
                update(TRANSFERS).where(
                    TRANSFERS.c.transfer_id == self._transfer_id,
                    TRANSFERS.c.state == _SEALING,
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
                    state=_SEALED,
                    seal_attempt=None,
                    table_counts=format_counts(sorted(sealed.tables.items())),
                    created_at=now,
                ),
            ).rowcount
            if done != 1:
                raise ClaimLost(f"transfer {self._transfer_id} is sealed by another attempt")
            set_delivery_bytes(conn, self._request_id, now, done=0, total=sealed.ciphertext_bytes)
        self._pending.clear()
        return True

    def _store_chunk(self, data: bytes) -> None:
        with begin_not_durable(self._engine) as conn:
            if not self._started and not self._start(conn):
                raise ClaimLost(f"transfer {self._transfer_id} was sealed meanwhile")
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
                TRANSFERS.c.direction == _OUTBOUND,
            )
            .with_for_update()
        ).scalar()
        if stale == _SEALED:
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
                direction=_OUTBOUND,
                header=b"",
                header_signature=b"",
                wrapped_key=b"",
                ciphertext_bytes=0,
                received_offset=0,
                state=_SEALING,
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
                TRANSFERS.c.state == _SEALING,
                TRANSFERS.c.seal_attempt == self._attempt,
                TRANSFERS.c.received_offset == self.offset,
            )
            .values(received_offset=self.offset + len(data))
        ).rowcount
        if moved != 1:
            raise ClaimLost(f"transfer {self._transfer_id} is sealed by another attempt")
        conn.execute(
            insert(TRANSFER_CHUNKS),
            dict(transfer_id=self._transfer_id, seq=self._seq, offset=self.offset, data=data),
        )
        self._seq += 1
        self.offset += len(data)


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


def spooled_ciphertext(engine: Database, transfer_id: str, offset: int = 0) -> Iterator[bytes]:
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


def stored_ciphertext(engine: Database, transfer_id: str) -> Iterator[bytes]:
    """The ciphertext as received, piece by piece (constant memory)."""
    with engine.connect().execution_options(**READ_ONLY) as conn:
        result = conn.execution_options(yield_per=4).execute(
            select(TRANSFER_CHUNKS.c.data)
            .where(TRANSFER_CHUNKS.c.transfer_id == transfer_id)
            .order_by(TRANSFER_CHUNKS.c.seq)
        )
        for (data,) in result:
            yield data


def store_frame(engine: Database, transfer_id: str, offset: int, data: bytes) -> None:
    """One durable frame of a transfer we receive: the bytes and the new offset commit together.

    The offset moves first, guarded: of two streams racing to store the same
    bytes (an old one still finishing, a retry already resuming) exactly one
    moves it, and the other gets ``Conflict`` (retry) before it writes a byte.
    """
    with engine.begin() as conn:
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


def insert_chunks(conn: Connection, transfer_id: str, chunks: Iterable[bytes]) -> None:
    """A whole ciphertext held in memory, chunk after chunk, in the caller's unit."""
    offset = 0
    for seq, data in enumerate(chunks):
        conn.execute(
            insert(TRANSFER_CHUNKS),
            dict(transfer_id=transfer_id, seq=seq, offset=offset, data=data),
        )
        offset += len(data)


def adopt_file_spool(engine: Database, spool_dir: Path, chunk_bytes: int) -> int:
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
                    TRANSFERS.c.direction == _OUTBOUND,
                    TRANSFERS.c.state == _SEALED,
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
