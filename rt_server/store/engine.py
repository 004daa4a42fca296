"""How to open the district database: the engine, its connection settings, its transactions.

``make_engine`` opens SQLite (the embedded default) or PostgreSQL (psycopg 3)
with the settings the server relies on -- on SQLite: WAL, foreign keys, a busy
timeout, writers queued and ``BEGIN IMMEDIATE`` -- and two execution options
mark transactions that need less: ``READ_ONLY`` (a snapshot that blocks no
writer) and ``NOT_DURABLE`` (bookkeeping that may commit without waiting for
the disk). The tables themselves are in ``rt_server.store.schema``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from rt_client._sqlite_files import restrict_sqlite_files

__all__ = [
    "NOT_DURABLE",
    "READ_ONLY",
    "SQLITE_AUTOCHECKPOINT_PAGES",
    "SQLITE_BUSY_TIMEOUT_MS",
    "begin_not_durable",
    "make_engine",
]

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
SQLITE_AUTOCHECKPOINT_PAGES: Final = 25_000
# Execution option for connections that only read: on SQLite their transactions
# are deferred (a snapshot that blocks no writer) instead of BEGIN IMMEDIATE.
# ``engine.connect().execution_options(**READ_ONLY)``.
READ_ONLY: Final[dict[str, Any]] = {"rt_read_only": True}
# Execution option for bookkeeping transactions whose loss in a power failure
# harms nothing -- leases, delivery progress, an outbox item marked done whose
# resend the peer recognises: they commit without waiting for the disk (SQLite:
# synchronous=NORMAL for that transaction, and the WAL is written in order, so
# the next durable commit's fsync covers them too; PostgreSQL: synchronous_commit
# off). Anything acknowledged to a peer or a registrar stays durable.
NOT_DURABLE: Final[dict[str, Any]] = {"rt_not_durable": True}


@contextmanager
def begin_not_durable(engine: Engine) -> Iterator[Connection]:
    """``engine.begin()`` for a ``NOT_DURABLE`` bookkeeping transaction."""
    with engine.connect().execution_options(**NOT_DURABLE) as conn, conn.begin():
        yield conn


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url`` (``sqlite:///path.db`` or ``postgresql+psycopg://...``).

    For SQLite it sets, on every new connection: WAL journal (readers do not
    block the writer), foreign keys on (off by default in SQLite), a 30 s busy
    timeout (wait for the writer rather than fail), and it makes every
    transaction ``BEGIN IMMEDIATE``. The last one matters: Python's sqlite3
    driver otherwise starts the transaction only at the first write, so a
    read-then-write (next SQ, "already imported?") would not be atomic, and a
    deferred transaction that upgrades to a writer fails at once instead of
    waiting. SQLite has one writer anyway; this makes it wait in line.
    Connections marked ``READ_ONLY`` begin deferred instead: a consistent
    snapshot (WAL) that does not hold up writers however long it stays open.
    The database file and its ``-wal``/``-shm`` are 0600 from creation
    (``restrict_sqlite_files``): they hold student records.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pool_pre_ping: replicas outlive database restarts and failovers.
        # hide_parameters: a logged database error must not carry student data.
        server = create_engine(url, echo=echo, pool_pre_ping=True, hide_parameters=True)

        @event.listens_for(server, "begin")
        def _on_server_begin(connection: Any) -> None:
            if connection.get_execution_options().get("rt_not_durable", False):
                connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

        return server

    restrict_sqlite_files(parsed)
    engine = create_engine(
        url,
        echo=echo,
        hide_parameters=True,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver (see docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            # FULL, not WAL's usual NORMAL: a commit we have acknowledged to a
            # peer (a signed receipt) must survive a power loss too. (Only
            # NOT_DURABLE transactions relax it, for themselves: _set_synchronous.)
            cursor.execute("PRAGMA synchronous=FULL")
            # A backstop: a district server checkpoints in the background
            # (WalCheckpointer), so a commit seldom has to (about 100 MB of WAL).
            cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
        finally:
            cursor.close()

    # Writers of this process queue on a lock before BEGIN IMMEDIATE. SQLite's
    # busy handler waits by sleeping and retrying (1, 2, 5, 10 ... 100 ms), so
    # threads contending for the write lock would sit idle for milliseconds
    # after it is free -- the largest part of a small transfer's latency. On
    # the lock they start the moment the writer before them ends. (Another
    # process on the same file still waits in the busy handler.) Re-entrant,
    # so a thread that opens a second writer meets SQLite's busy timeout, as
    # before, rather than hanging. The listeners that BEGIN also COMMIT or
    # ROLLBACK, so the lock is released only once the transaction is over.
    writer = threading.RLock()
    holders: set[int] = set()  # id() of the Connections whose transaction holds it

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("rt_read_only", False):
            connection.exec_driver_sql("BEGIN DEFERRED")
            return
        # Past the busy timeout, go on without the lock and let SQLite's own
        # busy handler decide, as it would have without the lock.
        queued = writer.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            _set_synchronous(connection)
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            if queued:
                writer.release()
            raise
        if queued:
            holders.add(id(connection))

    def _end(connection: Any, statement: str) -> None:
        if id(connection) not in holders:
            return  # a reader: the driver ends it
        try:
            dbapi_connection = connection.connection.dbapi_connection
        except Exception:  # noqa: BLE001 - invalidated: nothing left to end
            dbapi_connection = None
        try:
            if _in_transaction(dbapi_connection):
                dbapi_connection.execute(statement)
        except Exception:  # noqa: BLE001, S110
            # Still in the transaction: SQLAlchemy's own commit (or rollback)
            # runs next, fails the same way and reports it in its own terms.
            pass
        finally:
            if not _in_transaction(dbapi_connection):
                holders.discard(id(connection))
                writer.release()

    event.listen(engine, "commit", lambda connection: _end(connection, "COMMIT"))
    event.listen(engine, "rollback", lambda connection: _end(connection, "ROLLBACK"))
    return engine


def _set_synchronous(connection: Any) -> None:
    """Before BEGIN: FULL, or NORMAL for a ``NOT_DURABLE`` transaction (SQLite).

    Set per transaction on the pooled connection (only when it changes), so a
    relaxed transaction never leaves the next one on that connection relaxed.
    """
    wanted = "NORMAL" if connection.get_execution_options().get("rt_not_durable") else "FULL"
    info = connection.connection.info
    if info.get("rt_synchronous", "FULL") != wanted:
        connection.exec_driver_sql(f"PRAGMA synchronous={wanted}")
        info["rt_synchronous"] = wanted


def _in_transaction(dbapi_connection: Any) -> bool:
    try:
        return bool(dbapi_connection is not None and dbapi_connection.in_transaction)
    except Exception:  # noqa: BLE001 - a closed connection is in no transaction
        return False
