"""Import a received transfer's rows into our record tables, once, all or nothing.

DESIGN.md section 4 step 6: NEW rows are always written, DUPLICATE rows never,
CONFLICT rows only when the registrar accepted them (as additional rows). Rows
are written under our local student id with new sequence numbers (after the
student's highest) and source tag ``RT``. Every incoming row's outcome goes to
``import_ledger``, plus one marker row per transfer, so a second import of the
same transfer writes nothing and says so.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import Connection, func, insert, select

from rt_client.errors import InvalidInput, NotFound
from rt_server.core._db import Bind, aware, transaction
from rt_server.core.classify import RowClass, classify_against, load_student_rows
from rt_server.core.tables import ALL_TABLES, TABLES, TableRef, table_spec
from rt_server.core.validate import validate_row
from rt_server.db.schema import IMPORT_LEDGER, STUDENTS

__all__ = [
    "IMPORT_SOURCE",
    "AcceptConflicts",
    "ImportResult",
    "LedgerOutcome",
    "import_transfer",
]

# The SRC tag of every row written by an import (DESIGN.md section 4).
IMPORT_SOURCE: Final = "RT"

# Which CONFLICT rows to import: (table, index) pairs, or "all".
AcceptConflicts = Set[tuple[TableRef, int]] | Literal["all"]

# The ledger's marker row: present iff the transfer has been imported.
_MARKER_TABLE: Final = "*"
_MARKER_INDEX: Final = -1


class LedgerOutcome(enum.StrEnum):
    """Values of ``import_ledger.outcome``."""

    IMPORTED = "IMPORTED"
    SKIPPED_DUPLICATE = "SKIPPED_DUPLICATE"
    SKIPPED_CONFLICT = "SKIPPED_CONFLICT"  # a conflict the registrar did not accept
    TRANSFER = "TRANSFER"  # the marker row


@dataclass(frozen=True)
class ImportResult:
    """What an import did (or, if ``already_imported``, what the first one did)."""

    transfer_id: str
    imported: Mapping[str, int]  # table code -> rows written (tables with rows only)
    skipped: Mapping[str, int]  # table code -> duplicates and unaccepted conflicts
    already_imported: bool


def _ledger_counts(conn: Connection, transfer_id: str) -> tuple[dict[str, int], dict[str, int]]:
    ledger = IMPORT_LEDGER.c
    rows = conn.execute(
        select(ledger.table_code, ledger.outcome, func.count())
        .where(ledger.transfer_id == transfer_id, ledger.table_code != _MARKER_TABLE)
        .group_by(ledger.table_code, ledger.outcome)
    ).all()
    imported: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for code, outcome, count in rows:
        target = imported if outcome == LedgerOutcome.IMPORTED else skipped
        target[code] = target.get(code, 0) + count
    return _ordered(imported), _ordered(skipped)


def _ordered(counts: Mapping[str, int]) -> dict[str, int]:
    return {code: counts[code] for code in ALL_TABLES if counts.get(code)}


def import_transfer(
    bind: Bind,
    transfer_id: str,
    pid: str,
    incoming: Iterable[tuple[TableRef, int, Mapping[str, Any]]],
    accept_conflicts: AcceptConflicts = frozenset(),
    *,
    now: dt.datetime | None = None,
) -> ImportResult:
    """Import the decrypted rows of ``transfer_id`` for our student ``pid``.

    ``incoming`` yields ``(table, index, row dict)`` with ``index`` the row's
    position within its table in the transfer (the review's index). Rows are
    validated again here (the importer is the last gate before our tables).
    Runs in one transaction (a savepoint if ``bind`` is a connection already in
    one): either every row and ledger entry is written, or nothing is.

    Raises ``NotFound`` (no such student), ``InvalidInput`` (bad row, repeated
    ``(table, index)``, or an accepted conflict that is not in the transfer).
    A transfer already imported returns the first import's counts with
    ``already_imported=True`` and writes nothing.
    """
    at = aware(now)
    accept_all = accept_conflicts == "all"
    accepted: set[tuple[str, int]] = (
        set()
        if isinstance(accept_conflicts, str)
        else {(table_spec(t).code, i) for t, i in accept_conflicts}
    )

    with transaction(bind) as conn:
        # Lock the student first: on PostgreSQL this serialises concurrent
        # imports for one student, so the ledger check and the SQ numbers
        # below cannot race (SQLite has a single writer already).
        student = conn.execute(
            select(STUDENTS.c.local_id).where(STUDENTS.c.local_id == pid).with_for_update()
        ).first()
        if student is None:
            raise NotFound("no student with this local id")

        already = conn.execute(
            select(IMPORT_LEDGER.c.transfer_id).where(
                IMPORT_LEDGER.c.transfer_id == transfer_id,
                IMPORT_LEDGER.c.table_code == _MARKER_TABLE,
            )
        ).first()
        if already is not None:
            imported, skipped = _ledger_counts(conn, transfer_id)
            return ImportResult(transfer_id, imported, skipped, already_imported=True)

        by_table: dict[str, dict[int, dict[str, Any]]] = {code: {} for code in ALL_TABLES}
        for table, index, row in incoming:
            spec = table_spec(table)
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise InvalidInput(f"{spec.code}: row index must be a whole number from 0")
            rows = by_table[spec.code]
            if index in rows:
                raise InvalidInput(f"{spec.code} row {index}: given twice")
            rows[index] = validate_row(spec, row, index=index)
        for code, index in sorted(accepted):
            if index not in by_table[code]:
                raise InvalidInput(f"{code} row {index}: accepted conflict is not in this transfer")

        ledger_rows: list[dict[str, Any]] = []
        imported_counts: dict[str, int] = {}
        skipped_counts: dict[str, int] = {}
        for code in ALL_TABLES:
            rows_in = by_table[code]
            if not rows_in:
                continue
            spec = TABLES[code]
            held = load_student_rows(conn, pid, spec)
            next_sq = max((r["SQ"] for r in held), default=0) + 1
            to_write: list[dict[str, Any]] = []
            for result in classify_against(spec, held, sorted(rows_in.items())):
                wanted = result.row_class is RowClass.NEW or (
                    result.row_class is RowClass.CONFLICT
                    and (accept_all or (code, result.index) in accepted)
                )
                if wanted:
                    to_write.append(
                        {**result.incoming, "PID": pid, "SQ": next_sq, "SRC": IMPORT_SOURCE}
                    )
                    outcome, local_sq = LedgerOutcome.IMPORTED, next_sq
                    next_sq += 1
                elif result.row_class is RowClass.DUPLICATE:
                    outcome, local_sq = LedgerOutcome.SKIPPED_DUPLICATE, None
                else:
                    outcome, local_sq = LedgerOutcome.SKIPPED_CONFLICT, None
                ledger_rows.append(
                    {
                        "transfer_id": transfer_id,
                        "table_code": code,
                        "row_index": result.index,
                        "outcome": outcome,
                        "local_sq": local_sq,
                        "imported_at": at,
                    }
                )
            if to_write:
                # One executemany per table: a bulk insert on both databases.
                conn.execute(insert(spec.table), to_write)
                imported_counts[code] = len(to_write)
            if len(rows_in) > len(to_write):
                skipped_counts[code] = len(rows_in) - len(to_write)

        ledger_rows.append(
            {
                "transfer_id": transfer_id,
                "table_code": _MARKER_TABLE,
                "row_index": _MARKER_INDEX,
                "outcome": LedgerOutcome.TRANSFER,
                "local_sq": None,
                "imported_at": at,
            }
        )
        conn.execute(insert(IMPORT_LEDGER), ledger_rows)
        return ImportResult(transfer_id, imported_counts, skipped_counts, already_imported=False)
