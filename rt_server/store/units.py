"""Units of work, for the floor above: the flows decide what commits together, here.

A flow that must change several things in one transaction (a request's
status, its transfer, the outbox item that caused it) opens a unit with
``write`` (or ``write_not_durable`` for bookkeeping a power failure may lose)
and hands it to the store functions it calls; a flow that reads several things
from one snapshot opens ``read``. The flows hold a ``Database`` and ``Unit``s
and never see SQL or SQLAlchemy.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import sqlalchemy.exc
from sqlalchemy import Connection, Engine

from rt_server.store.engine import READ_ONLY, begin_not_durable

__all__ = ["Database", "DatabaseFailure", "Unit", "read", "write", "write_not_durable"]

# The district's database, as the flows hold it (``District.engine``).
Database = Engine
# An open transaction (or read-only snapshot) of it, handed back to store functions.
Unit = Connection
# The database could not complete a unit (a lock held past the timeout, a full
# disk, a lost connection): it rolled back, and may succeed if tried again.
DatabaseFailure = sqlalchemy.exc.OperationalError


def write(db: Database) -> AbstractContextManager[Unit]:
    """One durable transaction: committed when the block ends, rolled back if it raises."""
    return db.begin()


def write_not_durable(db: Database) -> AbstractContextManager[Unit]:
    """A ``NOT_DURABLE`` transaction: bookkeeping that a power failure may lose."""
    return begin_not_durable(db)


def read(db: Database) -> Unit:
    """A read-only connection (use it as ``with``): on SQLite it does not take the write lock."""
    return db.connect().execution_options(**READ_ONLY)
