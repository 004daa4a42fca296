"""``rt sis load``: an Aeries table export into our tables, whole or not at all.

Files are read row by row (``aeries_csv``) and written in batches of
``BATCH_ROWS`` through ``rt_server.store.sis_load``, all in one transaction.
At the first problem the writing stops, but the reading goes on so the admin
hears of every problem (the first ``MAX_PROBLEMS`` named, all counted); then
the transaction is rolled back and ``ExportRefused`` raised. A dry run does
the same work and rolls back: its counts are exactly what a load would do.

Duplicates within a file are found by one 64-bit digest of the row's student
and natural key per row (a dict of digest -> line): the one part of a load
whose memory grows with the export, by about 100 bytes a row.
"""

from __future__ import annotations

import datetime as dt
import operator
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine

from rt_client.errors import InvalidInput
from rt_server.core.tables import TABLES
from rt_server.sis.aeries_csv import (
    STUDENT_FILE,
    ExportFile,
    Problem,
    check_record_rows,
    export_files,
    quoted,
    read_rows,
)
from rt_server.store.sis_load import ExportLoad, LoadCounts, export_load, now_or

__all__ = ["BATCH_ROWS", "MAX_PROBLEMS", "ExportRefused", "LoadReport", "load_export"]

BATCH_ROWS: Final = 2000
MAX_PROBLEMS: Final = 100
# Aeries' STU column of each student field, to name it in a problem.
_STU_COLUMN: Final = {
    "local_id": "ID",
    "school": "SC",
    "legal_last_name": "LN",
    "legal_first_name": "FN",
    "legal_middle_name": "MN",
    "birth_date": "BD",
    "gender": "SX",
    "ssid": "CID",
}


class ExportRefused(InvalidInput):
    """The export has problems; nothing was written. ``problems``: the first ``MAX_PROBLEMS``."""

    def __init__(self, problems: list[Problem], count: int) -> None:
        shown = "\n".join(f"  {p}" for p in problems)
        more = f"\n  ... and {count - len(problems)} more" if count > len(problems) else ""
        super().__init__(
            f"the export was refused and nothing was loaded: {count} problem(s)\n{shown}{more}\n"
            "Correct the files (or export them again from the SIS) and load the folder again."
        )
        self.problems = problems
        self.count = count


@dataclass
class LoadReport:
    """What a load did (or, dry, would do): counts per table (STU first), rows read, time."""

    tables: dict[str, LoadCounts]
    rows: int
    seconds: float
    dry_run: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "tables": {
                code: {"new": c.new, "changed": c.changed, "unchanged": c.unchanged}
                for code, c in self.tables.items()
            },
        }


@dataclass
class _Problems:
    shown: list[Problem] = field(default_factory=list)
    count: int = 0

    def add(self, problem: Problem) -> None:
        self.count += 1
        if len(self.shown) < MAX_PROBLEMS:
            self.shown.append(problem)


def load_export(
    engine: Engine,
    folder: Path,
    *,
    actor: str,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    now: dt.datetime | None = None,
    schools: Mapping[str, str] | None = None,
) -> LoadReport:
    """Load the Aeries export in ``folder``; returns what it did (``dry_run``: would do).

    ``progress`` is called with the rows read so far, now and then. ``schools``
    maps the SIS's school numbers (STU.SC in a real Aeries export) to CDS codes
    (district.toml ``[sis.schools]``); a 14-digit CDS code there is taken as it is.
    Raises ``ExportRefused`` (nothing written) or ``InvalidInput`` (no such folder).
    """
    at = now_or(now)
    started = time.monotonic()
    files, unknown = export_files(folder)
    problems = _Problems()
    for problem in unknown:
        problems.add(problem)
    rows_read = 0
    with export_load(engine, commit=not dry_run) as load:
        for file in files:
            rows_read = _load_file(load, file, problems, rows_read, progress, at, schools or {})
        if problems.count:
            raise ExportRefused(problems.shown, problems.count)
        load.audit(actor=actor, now=at)
        counts = dict(load.counts)
    return LoadReport(counts, rows_read, time.monotonic() - started, dry_run)


def _load_file(
    load: ExportLoad,
    file: ExportFile,
    problems: _Problems,
    rows_read: int,
    progress: Callable[[int], None] | None,
    now: dt.datetime,
    schools: Mapping[str, str],
) -> int:
    """Read and write one file; returns the running count of rows read."""
    load.counts.setdefault(file.code, LoadCounts())
    is_students = file.code == STUDENT_FILE
    key_of = _student_key if is_students else _record_key(file.code)
    seen: dict[int, int] = {}
    batch: list[dict[str, Any]] = []
    lines: list[int] = []
    for item in read_rows(file):
        if isinstance(item, Problem):
            problems.add(item)
            continue
        line, row = item
        digest = hash(key_of(row))
        earlier = seen.setdefault(digest, line)
        if earlier != line:
            problems.add(
                Problem(file.name, line, None, f"the same {_key_text(file.code)} as line {earlier}")
            )
            continue
        if is_students and row.get("ssid"):
            # An SSID is one student's: two rows holding one would meet in the database.
            earlier = seen.setdefault(hash(("ssid", row["ssid"])), line)
            if earlier != line:
                problems.add(Problem(file.name, line, "CID", f"the same SSID as line {earlier}"))
                continue
        batch.append(row)
        lines.append(line)
        if len(batch) >= BATCH_ROWS:
            _flush(load, file, batch, lines, problems, now, schools)
            rows_read += len(batch)
            batch, lines = [], []
            if progress is not None:
                progress(rows_read)
    if batch:
        _flush(load, file, batch, lines, problems, now, schools)
        rows_read += len(batch)
        if progress is not None:
            progress(rows_read)
    return rows_read


def _is_cds(text: str) -> bool:
    return len(text) == 14 and text.isascii() and text.isdigit()


def _unmapped(school: str) -> str:
    return (
        f"{quoted(school)} is not a 14-digit CDS code, and [sis.schools] in district.toml "
        f'does not map this school number to one: add  "{school}" = "<its CDS code>"  '
        "under [sis.schools] and load again"
    )


def _student_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row.get("local_id"),)


def _record_key(code: str) -> Callable[[dict[str, Any]], Any]:
    # The key columns are required in the header, so every row read has them.
    return operator.itemgetter("PID", *TABLES[code].natural_key)


def _key_text(code: str) -> str:
    if code == STUDENT_FILE:
        return "student ID"
    return "student and " + ", ".join(TABLES[code].natural_key) + " (the table's key)"


def _flush(
    load: ExportLoad,
    file: ExportFile,
    batch: list[dict[str, Any]],
    lines: list[int],
    problems: _Problems,
    now: dt.datetime,
    schools: Mapping[str, str],
) -> None:
    """Check a batch and, while the export is clean so far, write it."""
    if file.code == STUDENT_FILE:
        for row, line in zip(batch, lines, strict=True):
            school = row.get("school")
            if school is None:
                continue
            if school in schools:
                row["school"] = schools[school]
            elif not _is_cds(school):
                problems.add(Problem(file.name, line, "SC", _unmapped(school)))
        if problems.count:
            return  # the load is refused already: checks that need the database are moot
        for i, name, text in load.students(batch, now=now):
            value = batch[i].get(name or "")
            if isinstance(value, str):
                text = f"{quoted(value)}: {text}"
            problems.add(Problem(file.name, lines[i], _STU_COLUMN.get(name or "", name), text))
        return
    spec = TABLES[file.code]
    pids = [row.pop("PID") for row in batch]
    present = tuple(batch[0])
    checked, bad = check_record_rows(spec, file.name, batch, lines)
    for problem in bad:
        problems.add(problem)
    if checked is None or problems.count:
        return
    for i, name, text in load.records(file.code, pids, checked, present):
        problems.add(Problem(file.name, lines[i], name, f'"{pids[i]}": {text}'))
