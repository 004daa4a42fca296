"""Review and import of a received transfer, at the requesting district (B).

Review decrypts the stored ciphertext on the fly with the district's HPKE
key (it is never stored decrypted) and classifies every row against what the
district holds for the student: NEW, DUPLICATE or CONFLICT by the table's
natural key. Import writes the NEW rows, replaces our rows with the CONFLICT
rows the registrar accepted (keeping the old versions), adds those to keep
beside ours, in one transaction with the import ledger, the status change and the
import notice for the prior district: importing twice changes nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from protos.rt.v1 import peer_pb2, records_pb2
from rt_client import transfer as rtx
from rt_client.crypto import envelope
from rt_client.crypto.trailer import header_digest
from rt_client.errors import WrongStatus
from rt_client.ids import DistrictCode, RequestId
from rt_server import _testhooks
from rt_server.core import tables, validate
from rt_server.core.model import RequestRecord
from rt_server.core.statuses import Action, Direction, Status
from rt_server.flows.district import District, new_id
from rt_server.store import (
    held_rows,
    importer,
    outbox_queue,
    request_status,
    requests,
    spool,
    transfers,
)
from rt_server.store.transfers import Transfer

# Which conflicts a registrar accepts at import (the servicer builds it from the request).
AcceptConflicts = importer.AcceptConflicts


@dataclass(frozen=True)
class IncomingRow:
    table: str  # Aeries code
    index: int  # position within its table in the transfer
    values: dict[str, Any]


class NotAllNew(Exception):
    """An import asked to write only all-NEW transfers met a row we hold already, or a
    conflicting one: nothing was imported (the batch leaves the transfer for review)."""


# The requests whose received records can be reviewed or imported (again: it changes nothing).
_REVIEWABLE = (Status.DATA_RECEIVED, Status.IMPORTED)


def _received_transfer(d: District, request_id: RequestId) -> tuple[RequestRecord, Transfer]:
    """The request and its RECEIVED transfer. Raises ``NotFound`` and ``WrongStatus``."""
    with d.reading() as conn:
        request = requests.load_request(conn, request_id, direction=Direction.OUTBOUND)
        if request.status not in _REVIEWABLE:
            raise WrongStatus(
                f"request is {request.status}; only {' or '.join(_REVIEWABLE)} requests "
                "can be reviewed or imported"
            )
        transfer = transfers.received_transfer(conn, request.transfer_id)
    if transfer is None:
        raise WrongStatus("the records of this request have not arrived")
    if transfer.purged_at is not None:
        raise WrongStatus(
            f"the received copy of these records was deleted on {transfer.purged_at:%Y-%m-%d} "
            "(retention, after the import); the imported rows are in 'rt student show'"
        )
    return request, transfer


def incoming_rows(d: District, transfer: Transfer) -> Iterator[IncomingRow]:
    """Decrypt the stored transfer and yield its rows as column values."""
    for first, rows in _checked_batches(d, transfer):
        code = rows.spec.code
        for offset, values in enumerate(rows.dicts()):
            yield IncomingRow(code, first + offset, values)


def _checked_batches(
    d: District, transfer: Transfer
) -> Generator[tuple[int, validate.CheckedRows], None, None]:
    """The stored transfer decrypted and validated batch by batch: (first row's index, rows)."""
    header = records_pb2.TransferHeader.FromString(transfer.header)
    digest = header_digest(transfer.header)
    counters: dict[str, int] = {}
    for batch in rtx.decrypt_batches(
        header,
        digest,
        transfer.wrapped_key,
        d.hpke_key_for(header.receiver_key_id),
        spool.stored_ciphertext(d.engine, transfer.transfer_id),
    ):
        code = tables.table_spec(batch.table).code
        first = counters.get(code, 0)
        rows = validate.checked_batch(batch, first_index=first)
        counters[code] = first + len(rows)
        yield first, rows


# A transfer this small (one student's records are some 20 KB) is decrypted and
# validated before the import takes the write lock, which it then holds only to
# write; a larger one is decrypted, validated and written a batch at a time,
# so memory stays flat however large it is. (Reading ahead in a second thread
# was measured slower on SQLite and no faster on PostgreSQL: the two threads
# take turns at Python's GIL row by row, and SQLite's insert is the longer part.)
PREPARE_BEFORE_IMPORT_BYTES = 1024 * 1024


def review_transfer(
    d: District, request_id: RequestId
) -> tuple[RequestRecord, dict[str, list[Any]]]:
    """(the request, {table code: classified rows}) for the registrar's review.

    Raises ``NotFound``, ``WrongStatus`` (no records received), ``IntegrityError``.
    """
    request, transfer = _received_transfer(d, request_id)
    by_table: dict[str, list[IncomingRow]] = {}
    for row in incoming_rows(d, transfer):
        by_table.setdefault(row.table, []).append(row)
    result: dict[str, list[Any]] = {}
    student = request.local_student_id
    assert student is not None  # we asked for a student of ours
    with d.reading() as conn:
        for code, rows in by_table.items():
            result[code] = held_rows.classify_rows(conn, student, code, [r.values for r in rows])
    return request, result


def import_received_transfer(
    d: District,
    *,
    request_id: RequestId,
    accept: importer.AcceptConflicts,
    actor: str,
    keep_both: importer.AcceptConflicts = frozenset(),
    all_new_only: bool = False,
) -> importer.ImportResult:
    """Import the request's received records (the NEW rows and the chosen conflicts).

    An ``accept``ed conflict replaces our row in place (the old version kept);
    one in ``keep_both`` is added beside ours. ``all_new_only``: import only if
    every row is NEW, else raise ``NotAllNew`` having imported nothing (one
    pass over the transfer where a review first would take two).

    One transaction with the import ledger, the status change and the import
    notice for the prior district: importing twice changes nothing. Raises
    ``NotFound``, ``WrongStatus``, ``IntegrityError`` (nothing is imported).
    """
    started = time.monotonic()
    request, transfer = _received_transfer(d, request_id)
    student = request.local_student_id
    assert student is not None  # we asked for a student of ours
    header = records_pb2.TransferHeader.FromString(transfer.header)
    batches: Generator[tuple[int, validate.CheckedRows], None, None]
    if header.plaintext_bytes <= PREPARE_BEFORE_IMPORT_BYTES:
        prepared = list(_checked_batches(d, transfer))
        batches = (batch for batch in prepared)
    else:
        batches = _checked_batches(d, transfer)
    now = d.clock()
    with d.writing() as conn, contextlib.closing(batches) as chunks:
        # Any failure (a chunk that does not decrypt, a bad row) rolls the whole import back.
        result = d.records_sink.import_batches(
            conn,
            transfer.transfer_id,
            student,
            chunks,
            accept,
            keep_both=keep_both,
            actor=actor,
            now=now,
        )
        if all_new_only and result.skipped and not result.already_imported:
            raise NotAllNew(request_id)  # rolls the import back
        current = requests.load_request(conn, request_id, direction=Direction.OUTBOUND)
        if not result.already_imported and current.status is Status.DATA_RECEIVED:
            request_status.set_status(conn, request_id, Action.IMPORT, actor=actor, now=now)
            notice = peer_pb2.ImportNotice(
                notice_id=new_id(),
                request_id=request_id,
                transfer_id=transfer.transfer_id,
                requesting_district=d.code,
                prior_district=request.prior_district,
            )
            notice.imported_at.FromDatetime(now)
            signed = d.sign(envelope.LABEL_IMPORT_NOTICE, notice)
            outbox_queue.enqueue(
                conn,
                kind="import_notice",
                request_id=RequestId(request_id),
                to_district=DistrictCode(request.prior_district),
                payload=signed.SerializeToString(),
                now=now,
                claim=d.outbox_claim(),
            )
        _testhooks.pause("import.before_commit")
    if not result.already_imported:
        rows = sum(result.imported.values()) + sum(result.replaced.values())
        d.metrics.imported(rows=rows, started=started)
    d.hand_over(request_id)
    return result
