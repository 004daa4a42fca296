"""Import a received transfer's rows into our record tables, once, all or nothing.

DESIGN.md section 4 step 6: NEW rows are always written, DUPLICATE rows never,
CONFLICT rows only when the registrar chose to: an accepted conflict updates
our row in place (its natural key and SQ stay, the received values and source
tag ``RT`` replace the rest; the old version is kept in ``replaced_rows``,
``rt_server.store.replaced_rows``), and a conflict to keep both is written as
an additional row. Rows are written under our local student id with new
sequence numbers (after the student's highest) and source tag ``RT``. Every
incoming row's outcome goes to ``import_ledger``, plus one marker row per
transfer, so a second import of the same transfer writes nothing and says so.

The ledger holds runs, not rows: one entry covers consecutive incoming rows of
one table with the same outcome (and, when imported, consecutive SQs). A table
we held nothing of for the student is all NEW, so it takes one entry however
many rows it has, and the record tables' inserts are the import's only
per-row database work.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    tuple_,
    union_all,
    update,
)

from rt_client.errors import InvalidInput, NotFound
from rt_server.core.classify import RowClass, classify_against
from rt_server.core.tables import ALL_TABLES, TableRef, TableSpec, table_spec
from rt_server.core.validate import CheckedRows, check_rows, recheck
from rt_server.store._db import Bind, aware, bulk_insert, transaction
from rt_server.store.replaced_rows import record_replaced_rows
from rt_server.store.schema import IMPORT_LEDGER, RECORD_TABLES, STUDENTS

__all__ = [
    "IMPORT_SOURCE",
    "AcceptConflicts",
    "ImportResult",
    "LedgerOutcome",
    "import_batches",
    "import_transfer",
]

# The SRC tag of every row written by an import (DESIGN.md section 4).
IMPORT_SOURCE: Final = "RT"

# Which CONFLICT rows to replace ours with (or, ``keep_both``, to add beside
# ours): (table, index) pairs, or "all".
AcceptConflicts = Set[tuple[TableRef, int]] | Literal["all"]

# The ledger's marker row: present iff the transfer has been imported. It
# covers no incoming row (row_count 0), so the row counts of a transfer's
# entries add up to the rows it had.
_MARKER_TABLE: Final = "*"
_MARKER_INDEX: Final = -1


class LedgerOutcome(enum.StrEnum):
    """Values of ``import_ledger.outcome``."""

    IMPORTED = "IMPORTED"
    REPLACED = "REPLACED"  # an accepted conflict: our row local_sq updated in place
    SKIPPED_DUPLICATE = "SKIPPED_DUPLICATE"
    SKIPPED_CONFLICT = "SKIPPED_CONFLICT"  # a conflict the registrar did not accept
    TRANSFER = "TRANSFER"  # the marker row


@dataclass(frozen=True)
class ImportResult:
    """What an import did (or, if ``already_imported``, what the first one did)."""

    transfer_id: str
    imported: Mapping[str, int]  # table code -> rows added (tables with rows only)
    skipped: Mapping[str, int]  # table code -> duplicates and unaccepted conflicts
    already_imported: bool
    replaced: Mapping[str, int] = field(default_factory=dict)  # our rows updated in place


def _ledger_counts(
    conn: Connection, transfer_id: str
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    ledger = IMPORT_LEDGER.c
    rows = conn.execute(
        select(ledger.table_code, ledger.outcome, func.sum(ledger.row_count))
        .where(ledger.transfer_id == transfer_id, ledger.table_code != _MARKER_TABLE)
        .group_by(ledger.table_code, ledger.outcome)
    ).all()
    imported: dict[str, int] = {}
    skipped: dict[str, int] = {}
    replaced: dict[str, int] = {}
    for code, outcome, count in rows:
        target = (
            imported
            if outcome == LedgerOutcome.IMPORTED
            else replaced
            if outcome == LedgerOutcome.REPLACED
            else skipped
        )
        target[code] = target.get(code, 0) + count
    return _ordered(imported), _ordered(skipped), _ordered(replaced)


def _ordered(counts: Mapping[str, int]) -> dict[str, int]:
    return {code: counts[code] for code in ALL_TABLES if counts.get(code)}


def import_transfer(
    bind: Bind,
    transfer_id: str,
    pid: str,
    incoming: Iterable[tuple[TableRef, int, Mapping[str, Any]]],
    accept_conflicts: AcceptConflicts = frozenset(),
    *,
    keep_both: AcceptConflicts = frozenset(),
    actor: str = "import",
    now: dt.datetime | None = None,
) -> ImportResult:
    """Import the decrypted rows of ``transfer_id`` for our student ``pid``.

    ``incoming`` yields ``(table, index, row dict)`` with ``index`` the row's
    position within its table in the transfer (the review's index); the rows
    of each table come in index order (tables may interleave). It is read
    once, as it comes -- it may be the transfer being decrypted -- and rows
    are validated again, classified, written and entered in the ledger a chunk
    at a time, so memory stays flat however large the transfer is. Rows are
    validated again here (the importer is the last gate before our tables).
    Runs in one transaction (a savepoint if ``bind`` is a connection already in
    one): either every row and ledger entry is written, or nothing is.

    ``accept_conflicts`` replace the row of ours they conflict with (the old
    version kept, an audit row by ``actor``), ``keep_both`` are added beside it.

    Raises ``NotFound`` (no such student), ``InvalidInput`` (bad row, a
    ``(table, index)`` repeated or out of order, an accepted or kept conflict
    that is not in the transfer, a row both accepted and kept, or two accepted
    rows that would replace the same row of ours). A transfer already imported returns the first
    import's counts with ``already_imported=True`` and writes nothing.
    """
    return _import(
        bind, transfer_id, pid, _checked_chunks(incoming), accept_conflicts, keep_both, actor, now
    )


def import_batches(
    bind: Bind,
    transfer_id: str,
    pid: str,
    batches: Iterable[tuple[int, CheckedRows]],
    accept_conflicts: AcceptConflicts = frozenset(),
    *,
    keep_both: AcceptConflicts = frozenset(),
    actor: str = "import",
    now: dt.datetime | None = None,
) -> ImportResult:
    """``import_transfer`` for rows that ``validate`` gave as ``CheckedRows``, batch by batch.

    ``batches`` yields ``(index of the batch's first row, rows)``; this is how a
    received transfer is imported (no row dicts on the way). Every batch is
    checked again here (``validate.recheck``). Same transaction, results and
    errors as ``import_transfer``.
    """
    return _import(
        bind, transfer_id, pid, _rechecked(batches), accept_conflicts, keep_both, actor, now
    )


def _import(
    bind: Bind,
    transfer_id: str,
    pid: str,
    chunks: Iterable[tuple[TableSpec, Sequence[int], CheckedRows]],
    accept_conflicts: AcceptConflicts,
    keep_both: AcceptConflicts,
    actor: str,
    now: dt.datetime | None,
) -> ImportResult:
    at = aware(now)
    if accept_conflicts == "all" and keep_both == "all":
        raise InvalidInput("accept every conflict or keep both of every conflict, not both")
    choice = _Choice(
        replace_all=accept_conflicts == "all",
        keep_all=keep_both == "all",
        replace=_refs(accept_conflicts),
        keep=_refs(keep_both),
        actor=actor,
        at=at,
    )
    for code, index in sorted(choice.replace & choice.keep):
        raise InvalidInput(
            f"{code} row {index}: either accept the conflict (replacing our row) or keep both"
        )
    chosen = choice.replace | choice.keep

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
            imported, skipped, replaced = _ledger_counts(conn, transfer_id)
            return ImportResult(transfer_id, imported, skipped, True, replaced)

        tables: dict[str, _TableImport] = {}
        held: dict[str, int | None] | None = None  # the student's highest SQ per table
        found: set[tuple[str, int]] = set()  # chosen conflicts seen in the transfer
        for spec, indexes, checked in chunks:
            state = tables.get(spec.code)
            if state is None:
                if held is None:
                    held = _highest_sqs(conn, pid)
                state = tables[spec.code] = _TableImport.start(spec, held[spec.code])
            if chosen:
                found.update((spec.code, i) for i in indexes if (spec.code, i) in chosen)
            state.write(conn, transfer_id, pid, indexes, checked, choice)
        for code, index in sorted(chosen - found):
            which = "accepted" if (code, index) in choice.replace else "kept"
            raise InvalidInput(f"{code} row {index}: {which} conflict is not in this transfer")

        # Each table's last run (it might have gone on), and the marker.
        runs = [(code, run) for code, t in tables.items() for run in t.runs]
        runs.append((_MARKER_TABLE, _Run(_MARKER_INDEX, 0, LedgerOutcome.TRANSFER, None)))
        bulk_insert(conn, IMPORT_LEDGER, _ledger(transfer_id, runs, at))
        imported_counts = {code: t.imported for code, t in tables.items() if t.imported}
        skipped_counts = {code: t.skipped for code, t in tables.items() if t.skipped}
        replaced_counts = {code: len(t.replaced) for code, t in tables.items() if t.replaced}
        return ImportResult(
            transfer_id,
            _ordered(imported_counts),
            _ordered(skipped_counts),
            False,
            _ordered(replaced_counts),
        )


def _refs(chosen: AcceptConflicts) -> set[tuple[str, int]]:
    return set() if isinstance(chosen, str) else {(table_spec(t).code, i) for t, i in chosen}


@dataclass(frozen=True)
class _Choice:
    """What the registrar chose for the CONFLICT rows, and who did."""

    replace_all: bool
    keep_all: bool
    replace: set[tuple[str, int]]  # (table code, index): update our row in place
    keep: set[tuple[str, int]]  # (table code, index): add beside ours
    actor: str
    at: dt.datetime

    def of(self, code: str, index: int) -> LedgerOutcome:
        """What becomes of a CONFLICT row: REPLACED, IMPORTED (kept both) or SKIPPED_CONFLICT."""
        if self.replace_all or (code, index) in self.replace:
            return LedgerOutcome.REPLACED
        if self.keep_all or (code, index) in self.keep:
            return LedgerOutcome.IMPORTED
        return LedgerOutcome.SKIPPED_CONFLICT


# Rows are validated, classified, written and entered in the ledger this many
# at a time (a chunk holds rows of one table).
_CHUNK_ROWS: Final = 1000


@dataclass(slots=True)
class _Run:
    """Consecutive incoming rows of one table with one outcome: one ledger entry."""

    first: int  # the index of its first row
    count: int
    outcome: LedgerOutcome
    first_sq: int | None  # IMPORTED: the SQ of its first row; the others follow

    def extend(self, index: int, count: int, outcome: LedgerOutcome, sq: int | None) -> bool:
        """Take ``count`` rows from ``index`` on if they continue this run; say if they did."""
        next_sq = None if self.first_sq is None else self.first_sq + self.count
        if outcome is not self.outcome or index != self.first + self.count or sq != next_sq:
            return False
        self.count += count
        return True


def _ledger(
    transfer_id: str, runs: Sequence[tuple[str, _Run]], at: dt.datetime
) -> dict[str, list[Any]]:
    """Ledger entries of ``(table code, run)``, column by column, for ``bulk_insert``."""
    count = len(runs)
    return {
        "transfer_id": [transfer_id] * count,
        "table_code": [code for code, _ in runs],
        "row_index": [run.first for _, run in runs],
        "row_count": [run.count for _, run in runs],
        "outcome": [str(run.outcome) for _, run in runs],
        "local_sq": [run.first_sq for _, run in runs],
        "imported_at": [at] * count,
    }


def _checked_chunks(
    incoming: Iterable[tuple[TableRef, int, Mapping[str, Any]]],
) -> Iterator[tuple[TableSpec, Sequence[int], CheckedRows]]:
    """Runs of rows of one table, at most ``_CHUNK_ROWS`` long, indexes and rows checked."""
    for spec, indexes, rows in _chunks(incoming):
        yield spec, indexes, check_rows(spec, rows, indexes)


def _rechecked(
    batches: Iterable[tuple[int, CheckedRows]],
) -> Iterator[tuple[TableSpec, Sequence[int], CheckedRows]]:
    last_index: dict[str, int] = {}
    for first, rows in batches:
        code = rows.spec.code
        if not isinstance(first, int) or isinstance(first, bool) or first < 0:
            raise InvalidInput(f"{code}: row index must be a whole number from 0")
        if first <= last_index.get(code, -1):
            raise InvalidInput(
                f"{code} row {first}: given twice or out of order "
                "(rows of a table come in index order)"
            )
        last_index[code] = first + len(rows) - 1
        yield rows.spec, range(first, first + len(rows)), recheck(rows, first_index=first)


def _chunks(
    incoming: Iterable[tuple[TableRef, int, Mapping[str, Any]]],
) -> Iterator[tuple[TableSpec, list[int], list[Mapping[str, Any]]]]:
    """Runs of rows of one table, at most ``_CHUNK_ROWS`` long, indexes checked."""
    last_index: dict[str, int] = {}
    spec: TableSpec | None = None
    ref: object = None
    indexes: list[int] = []
    rows: list[Mapping[str, Any]] = []
    for table, index, row in incoming:
        if table is not ref or spec is None:
            next_spec = table_spec(table)
            ref = table
            if next_spec is not spec:
                if spec is not None and rows:
                    yield spec, indexes, rows
                    indexes, rows = [], []
                spec = next_spec
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise InvalidInput(f"{spec.code}: row index must be a whole number from 0")
        if index <= last_index.get(spec.code, -1):
            raise InvalidInput(
                f"{spec.code} row {index}: given twice or out of order "
                "(rows of a table come in index order)"
            )
        last_index[spec.code] = index
        indexes.append(index)
        rows.append(row)
        if len(rows) >= _CHUNK_ROWS:
            yield spec, indexes, rows
            indexes, rows = [], []
    if spec is not None and rows:
        yield spec, indexes, rows


@dataclass
class _TableImport:
    """One table's part of an import: where its new SQ numbers are, what it did."""

    spec: TableSpec
    holds_rows: bool  # we held rows of this table for the student before the import
    first_sq: int  # those have SQ below this; the rows we write, from it on
    next_sq: int
    imported: int = 0
    skipped: int = 0
    replaced: dict[int, int] = field(default_factory=dict)  # our SQ -> the index replacing it
    # Ledger entries not yet written: the last one may go on in the next chunk.
    runs: list[_Run] = field(default_factory=list)

    @classmethod
    def start(cls, spec: TableSpec, held_max: int | None) -> _TableImport:
        """``held_max``: the student's highest SQ in the table before the import (None: no rows)."""
        first = (held_max or 0) + 1
        return cls(spec, held_max is not None, first, first)

    def write(
        self,
        conn: Connection,
        transfer_id: str,
        pid: str,
        indexes: Sequence[int],
        checked: CheckedRows,
        choice: _Choice,
    ) -> None:
        spec = self.spec
        code = spec.code
        count = len(indexes)
        if not count:
            return
        names = spec.column_names
        written: int
        replacing: list[tuple[int, Mapping[str, Any], Mapping[str, Any]]] = []
        if not self.holds_rows:
            # We hold nothing of this table for the student: every row is NEW.
            columns: dict[str, Sequence[Any]] = dict(zip(names, checked.columns, strict=True))
            columns["SQ"] = range(self.next_sq, self.next_sq + count)
            columns["SRC"] = [IMPORT_SOURCE] * count
            if indexes[-1] - indexes[0] == count - 1:  # no gaps (indexes increase): one run
                self._add_run(indexes[0], count, LedgerOutcome.IMPORTED, self.next_sq)
            else:
                for offset, index in enumerate(indexes):
                    self._add_run(index, 1, LedgerOutcome.IMPORTED, self.next_sq + offset)
            written = count
        else:
            incoming = checked.dicts()
            held = _held_rows(conn, spec, pid, self.first_sq, {_key(spec, r) for r in incoming})
            rows = []
            sq = self.next_sq
            for result in classify_against(spec, held, zip(indexes, incoming, strict=True)):
                if result.row_class is RowClass.DUPLICATE:
                    outcome = LedgerOutcome.SKIPPED_DUPLICATE
                elif result.row_class is RowClass.NEW:
                    outcome = LedgerOutcome.IMPORTED
                else:
                    outcome = choice.of(code, result.index)
                if outcome is LedgerOutcome.IMPORTED:
                    rows.append({**result.incoming, "SQ": sq, "SRC": IMPORT_SOURCE})
                    self._add_run(result.index, 1, outcome, sq)
                    sq += 1
                elif outcome is LedgerOutcome.REPLACED:
                    assert result.existing is not None  # a CONFLICT is against a row of ours
                    ours = result.existing
                    earlier = self.replaced.setdefault(ours["SQ"], result.index)
                    if earlier != result.index:
                        raise InvalidInput(
                            f"{code} rows {earlier} and {result.index} both conflict with our "
                            f"row SQ {ours['SQ']}: accept only one of them (the other can be "
                            "kept as an additional row)"
                        )
                    replacing.append((result.index, ours, result.incoming))
                    self._add_run(result.index, 1, outcome, ours["SQ"])
                else:
                    self._add_run(result.index, 1, outcome, None)
            columns = {name: [row[name] for row in rows] for name in names}
            written = len(rows)
            self._replace(conn, transfer_id, pid, replacing, choice)
        # One executemany per chunk and table: a bulk insert on both databases.
        bulk_insert(conn, RECORD_TABLES[code], {"PID": [pid] * written, **columns})
        if len(self.runs) > 1:  # runs that cannot go on any more
            done = [(code, run) for run in self.runs[:-1]]
            bulk_insert(conn, IMPORT_LEDGER, _ledger(transfer_id, done, choice.at))
            del self.runs[:-1]
        replaced = len(replacing)
        self.next_sq += written
        self.imported += written
        self.skipped += count - written - replaced

    def _replace(
        self,
        conn: Connection,
        transfer_id: str,
        pid: str,
        replacing: Sequence[tuple[int, Mapping[str, Any], Mapping[str, Any]]],
        choice: _Choice,
    ) -> None:
        """Update our rows in place with the accepted values; keep their old versions first."""
        if not replacing:
            return
        spec = self.spec
        record_replaced_rows(
            conn,
            spec,
            pid,
            transfer_id,
            [(index, ours) for index, ours, _ in replacing],
            actor=choice.actor,
            at=choice.at,
        )
        table = RECORD_TABLES[spec.code]
        # The natural key is the same by definition: the other data columns and SRC change.
        changed = [name for name in spec.data_columns if name not in spec.natural_key]
        statement = (
            update(table)
            .where(table.c.PID == bindparam("pid_"), table.c.SQ == bindparam("sq_"))
            .values({name: bindparam(f"v_{name}") for name in [*changed, "SRC"]})
        )
        conn.execute(
            statement,
            [
                {
                    "pid_": pid,
                    "sq_": ours["SQ"],
                    "v_SRC": IMPORT_SOURCE,
                    **{f"v_{name}": new[name] for name in changed},
                }
                for _, ours, new in replacing
            ],
        )

    def _add_run(self, index: int, count: int, outcome: LedgerOutcome, sq: int | None) -> None:
        if not self.runs or not self.runs[-1].extend(index, count, outcome, sq):
            self.runs.append(_Run(index, count, outcome, sq))


def _highest_sqs(conn: Connection, pid: str) -> dict[str, int | None]:
    """The student's highest SQ in each record table (None: no rows), in one query."""
    return {code: sq for code, sq in conn.execute(_highest_sqs_query(), {"pid": pid})}


@functools.cache
def _highest_sqs_query() -> CompoundSelect[*tuple[Any, ...]]:
    return union_all(
        *(
            select(literal(code), func.max(table.c.SQ)).where(table.c.PID == bindparam("pid"))
            for code, table in RECORD_TABLES.items()
        )
    )


def _key(spec: TableSpec, row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in spec.natural_key)


def _held_rows(
    conn: Connection, spec: TableSpec, pid: str, before_sq: int, keys: set[tuple[Any, ...]]
) -> list[dict[str, Any]]:
    """The rows we held before the import whose natural key is one of ``keys`` (SQ order).

    One query by the (PID, natural key) index; keys with a NULL part are
    matched with IS NULL, as the classification compares None equal to None.
    """
    table = RECORD_TABLES[spec.code]
    key_columns = [table.c[name] for name in spec.natural_key]
    plain = [k for k in keys if None not in k]
    conditions: list[ColumnElement[bool]] = []
    if plain:
        conditions.append(tuple_(*key_columns).in_(plain))
    for key in keys:
        if None in key:
            parts = zip(key_columns, key, strict=True)
            conditions.append(and_(*(c.is_(None) if v is None else c == v for c, v in parts)))
    if not conditions:
        return []
    query = (
        select(table)
        .where(table.c.PID == pid, table.c.SQ < before_sq, or_(*conditions))
        .order_by(table.c.SQ)
    )
    return [dict(r) for r in conn.execute(query).mappings()]
