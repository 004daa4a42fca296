"""B3's floor: what SQLite alone takes to write the consolidation's rows.

The import's database work cannot be faster than SQLite inserting the same
rows into the same tables (same schema, indexes, foreign keys and pragmas as a
district server: WAL, ``synchronous=FULL``). Two ways are timed on fresh
copies of the receiving district's template, nothing else running:

- ``executemany``: Python's ``sqlite3`` binding every value of every row, as
  the importer does (the rows are built beforehand; only the insert is timed);
- ``insert_select``: one ``INSERT ... SELECT`` per table from the sending
  district's database attached: no Python per row at all (what the peer
  pipeline's ``sqlite3`` CLI does after its ``.import``).

The gap between our import and ``executemany`` is our per-row Python
(decryption, validation, the recheck); ``executemany`` against
``insert_select`` is the cost of handing rows to SQLite from Python.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from rt_server.core.tables import ALL_TABLES

BATCH_ROWS = 5000  # as the importer's batches


def insert_floor(prior_db: Path, new_db: Path, prior_id: str, new_id: str) -> dict[str, Any]:
    """Seconds for each way of inserting the prior student's rows under ``new_id``."""
    work = new_db.parent / "floor"
    work.mkdir(exist_ok=True)
    rows = _rows(prior_db, prior_id, new_id)
    out: dict[str, Any] = {"rows": sum(len(r) for _, r in rows.values())}
    out["executemany_s"] = _timed(work / "executemany.db", new_db, lambda c: _executemany(c, rows))
    out["insert_select_s"] = _timed(
        work / "insert_select.db",
        new_db,
        lambda c: _insert_select(c, prior_id, new_id),
        attach=prior_db,
    )
    shutil.rmtree(work, ignore_errors=True)
    return out


def _rows(prior_db: Path, prior_id: str, new_id: str) -> dict[str, tuple[list[str], list[Any]]]:
    source = sqlite3.connect(prior_db)
    try:
        out = {}
        for code in ALL_TABLES:
            query = f'SELECT * FROM "{code}" WHERE PID = ? ORDER BY SQ'
            cursor = source.execute(query, (prior_id,))
            names = [d[0] for d in cursor.description]
            pid = names.index("PID")
            out[code] = (
                names,
                [(*r[:pid], new_id, *r[pid + 1 :]) for r in cursor.fetchall()],
            )
        return out
    finally:
        source.close()


def _timed(path: Path, template: Path, work: Any, attach: Path | None = None) -> float:
    shutil.copyfile(template, path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
        if attach is not None:
            conn.execute("ATTACH DATABASE ? AS prior", (str(attach),))
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        work(conn)
        conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


def _executemany(conn: sqlite3.Connection, rows: dict[str, tuple[list[str], list[Any]]]) -> None:
    for code, (names, values) in rows.items():
        sql = f'INSERT INTO "{code}" ({", ".join(names)}) VALUES ({", ".join("?" * len(names))})'
        for start in range(0, len(values), BATCH_ROWS):
            conn.executemany(sql, values[start : start + BATCH_ROWS])


def _insert_select(conn: sqlite3.Connection, prior_id: str, new_id: str) -> None:
    for code in ALL_TABLES:
        names = [r[1] for r in conn.execute(f'PRAGMA main.table_info("{code}")')]
        chosen = ", ".join("?" if n == "PID" else n for n in names)
        conn.execute(
            f'INSERT INTO main."{code}" ({", ".join(names)}) '
            f'SELECT {chosen} FROM prior."{code}" WHERE PID = ? ORDER BY SQ',
            (new_id, prior_id),
        )
