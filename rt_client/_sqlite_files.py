"""SQLite database files readable and writable by their owner only (0600), from creation.

The district database holds student records, the registry's the districts'
code hashes. SQLite creates a missing database file with mode 0644 (less the
umask), so the file would be world-readable the moment it exists; it then
gives the ``-wal``, ``-shm`` and ``-journal`` files the mode of the database
file. Creating the empty file ourselves with 0600 before SQLite opens it
therefore makes every file of the database 0600; files left by an older
version (or copied in) are corrected on start.

It lives in ``rt_client`` only because that is the package both servers
depend on (as ``_migrations`` does); nothing in the protocol library uses it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Final

from sqlalchemy.engine import URL, make_url

__all__ = ["FILE_MODE", "restrict_sqlite_files"]

log = logging.getLogger("rt_client.db")

FILE_MODE: Final = 0o600
# The files SQLite keeps beside a database (WAL mode, and rollback-journal mode).
_SIDECARS: Final = ("-wal", "-shm", "-journal")


def restrict_sqlite_files(url: str | URL) -> Path | None:
    """Make the SQLite database at ``url`` and its side files 0600; create it empty if missing.

    Returns the database's path, or None for what is not a file of ours: other
    databases (PostgreSQL), ``:memory:``, and SQLite URI filenames
    (``?uri=true``), whose path SQLite parses itself. Never raises: a file it
    cannot create or correct is left to SQLite, which reports it in its own
    terms when it opens the database (a correction refused is logged).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    in_memory = database in ("", ":memory:")
    if in_memory or "uri" in parsed.query or database.startswith("file:"):
        return None
    path = Path(database)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except OSError:
        pass  # it exists (corrected below), or SQLite will say why it cannot be opened
    else:
        os.close(fd)
    corrected: list[str] = []
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in _SIDECARS)):
        try:
            mode = stat.S_IMODE(candidate.stat().st_mode)
        except OSError:
            continue  # not there (yet)
        if mode == FILE_MODE:
            continue
        try:
            os.chmod(candidate, FILE_MODE)
        except OSError as exc:
            log.warning("cannot make %s mode 0600 (it is %04o): %s", candidate, mode, exc)
            continue
        corrected.append(f"{candidate.name} (was {mode:04o})")
    if corrected:
        log.info(
            "database files in %s made readable by their owner only (0600): %s",
            path.parent,
            ", ".join(corrected),
        )
    return path
