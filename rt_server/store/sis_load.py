"""The SQL of a bulk load from a SIS export (``rt sis load``): upserts by natural key.

Students are matched by local id; record rows by student and their table's
natural key (DESIGN.md section 6). A row that matches and says the same is
left alone, one that says something else is updated in place (its SQ kept),
a new one is inserted after the student's highest SQ. ``ExportLoad`` holds
the one transaction of a whole load: ``rt_server.sis.load`` feeds it batches
and commits it only when every file was clean, so a bad file writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from rt_client.errors import InvalidInput
from rt_server.core.tables import TABLES
from rt_server.core.validate import CheckedRows
from rt_server.store._db import aware, bulk_insert
from rt_server.store.audit import write_audit
from rt_server.store.schema import RECORD_TABLES, STUDENTS
from rt_server.store.students import EDITABLE_FIELDS, check_student_field, name_keys

__all__ = ["ExportLoad", "LoadCounts", "RowProblem", "export_load"]

# (index of the row in its batch, column or None, what is wrong)
RowProblem = tuple[int, str | None, str]


@dataclass
class LoadCounts:
    """What a load did to one table."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0


@dataclass
class ExportLoad:
    """The open transaction of one load; see ``export_load``."""

    conn: Connection
    counts: dict[str, LoadCounts] = field(default_factory=dict)

    def _counts(self, code: str) -> LoadCounts:
        return self.counts.setdefault(code, LoadCounts())

    def students(self, rows: Sequence[Mapping[str, Any]], *, now: dt.datetime) -> list[RowProblem]:
        """Upsert a batch of students (``registrar_pb2.Student`` field names; absent: kept).

        Fields are checked as ``rt student add`` checks them. Returns the
        problems instead of raising; nothing of the batch is written if any.
        """
        problems: list[RowProblem] = []
        checked: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            values: dict[str, Any] = {}
            for name, value in row.items():
                try:
                    values[name] = check_student_field(name, value)
                except InvalidInput as exc:
                    problems.append((i, name, str(exc)))
            if values.get("local_id") is None:
                problems.append((i, "local_id", "the student ID is empty"))
            checked.append(values)
        if problems:
            return problems
        ids = [row["local_id"] for row in checked]
        s = STUDENTS.c
        existing = {
            r["local_id"]: r
            for r in self.conn.execute(select(STUDENTS).where(s.local_id.in_(ids))).mappings()
        }
        ssids = {row["ssid"]: i for i, row in enumerate(checked) if row.get("ssid")}
        if ssids:
            for holder, ssid in self.conn.execute(
                select(s.local_id, s.ssid).where(s.ssid.in_(list(ssids)))
            ):
                i = ssids[ssid]
                if holder != checked[i]["local_id"]:
                    problems.append((i, "ssid", f"the SSID is already student {holder}'s"))
        if problems:
            return problems
        counts = self._counts("STU")
        new: list[dict[str, Any]] = []
        for row in checked:
            old = existing.get(row["local_id"])
            if old is None:
                values = {name: row.get(name) for name in EDITABLE_FIELDS}
                values.update(name_keys(row["legal_first_name"], row["legal_last_name"]))
                new.append({"local_id": row["local_id"], "created_at": now, **values})
                continue
            changes = {n: v for n, v in row.items() if n != "local_id" and old[n] != v}
            if not changes:
                counts.unchanged += 1
                continue
            if "legal_first_name" in changes or "legal_last_name" in changes:
                changes.update(
                    name_keys(
                        changes.get("legal_first_name", old["legal_first_name"]),
                        changes.get("legal_last_name", old["legal_last_name"]),
                    )
                )
            self.conn.execute(update(STUDENTS).where(s.local_id == row["local_id"]), changes)
            counts.changed += 1
        if new:
            self.conn.execute(insert(STUDENTS), new)
            counts.new += len(new)
        return problems

    def records(
        self, code: str, pids: Sequence[str], rows: CheckedRows, present: Sequence[str]
    ) -> list[RowProblem]:
        """Upsert a batch of rows of table ``code`` for students ``pids`` (row by row).

        ``present``: the columns the export gives (others are kept on an
        existing row, NULL on a new one). Returns the problems (a student who
        is not enrolled) instead of raising; nothing is written if any.
        """
        spec = TABLES[code]
        table = RECORD_TABLES[code]
        wanted = sorted(set(pids))
        enrolled = set(
            self.conn.execute(
                select(STUDENTS.c.local_id).where(STUDENTS.c.local_id.in_(wanted))
            ).scalars()
        )
        problems: list[RowProblem] = [
            (i, "PID", "no student with this ID (not in STU.csv, nor enrolled before)")
            for i, pid in enumerate(pids)
            if pid not in enrolled
        ]
        if problems:
            return problems
        key_names = spec.natural_key
        compared = [n for n in present if n not in ("SQ", "PID")]
        existing: dict[tuple[Any, ...], tuple[int, tuple[Any, ...]]] = {}
        highest: dict[str, int] = {}
        c = table.c
        query = select(c.PID, c.SQ, *(c[n] for n in key_names), *(c[n] for n in compared)).where(
            c.PID.in_(wanted)
        )
        k = 2 + len(key_names)
        # fetchall: one call into the driver for the batch's students, not one a row.
        for found in self.conn.execute(query).all():
            pid, sq = found[0], found[1]
            existing[(pid, *found[2:k])] = (sq, tuple(found[k:]))
            if sq > highest.get(pid, 0):
                highest[pid] = sq
        names = spec.column_names
        position = {n: names.index(n) for n in names}
        columns = rows.columns
        # Keys and compared values of every row at once (zip runs in C), then
        # one pass against what the students hold.
        keys = list(zip(pids, *(columns[position[n]] for n in key_names), strict=True))
        new_values = list(zip(*(columns[position[n]] for n in compared), strict=True))
        if not compared:
            new_values = [()] * len(keys)
        counts = self._counts(code)
        new_at: list[int] = []
        new_sqs: list[int] = []
        updates: list[dict[str, Any]] = []
        for i, (key, values) in enumerate(zip(keys, new_values, strict=True)):
            match = existing.get(key)
            if match is None:
                pid = key[0]
                sq = highest.get(pid, 0) + 1
                highest[pid] = sq
                existing[key] = (sq, values)
                new_at.append(i)
                new_sqs.append(sq)
            elif match[1] != values:
                update_values = {f"v_{n}": v for n, v in zip(compared, values, strict=True)}
                updates.append({"b_pid": key[0], "b_sq": match[0], **update_values})
                existing[key] = (match[0], values)
            else:
                counts.unchanged += 1
        if new_at:
            every = len(new_at) == len(keys)
            inserted: dict[str, Sequence[Any]] = {
                "PID": list(pids) if every else [pids[i] for i in new_at]
            }
            for n, column in zip(names, columns, strict=True):
                if n == "SQ":
                    inserted[n] = new_sqs
                else:
                    inserted[n] = column if every else [column[i] for i in new_at]
            bulk_insert(self.conn, table, inserted)
            counts.new += len(new_at)
        if updates:
            statement = (
                update(table)
                .where(c.PID == bindparam("b_pid"), c.SQ == bindparam("b_sq"))
                .values({n: bindparam(f"v_{n}") for n in compared})
            )
            self.conn.execute(statement, updates)
            counts.changed += len(updates)
        return problems

    def audit(self, *, actor: str, now: dt.datetime) -> None:
        """The audit row of the load: counts per table, no student data."""
        detail = "; ".join(
            f"{code} new={n.new} changed={n.changed} unchanged={n.unchanged}"
            for code, n in self.counts.items()
        )
        write_audit(self.conn, actor=actor, action="sis.load", detail=detail[:1000], now=now)


@contextmanager
def export_load(engine: Engine, *, commit: bool) -> Iterator[ExportLoad]:
    """One transaction for a whole load: committed at the end if ``commit``, else rolled back.

    An exception rolls it back (a refused export writes nothing).
    """
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            yield ExportLoad(conn)
        except BaseException:
            transaction.rollback()
            raise
        if commit:
            transaction.commit()
        else:
            transaction.rollback()


def now_or(now: dt.datetime | None) -> dt.datetime:
    """``now`` as aware UTC (default: the clock)."""
    return aware(now)
