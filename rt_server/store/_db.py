"""Plumbing shared by the core's database functions: transactions and the clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.exc import DBAPIError

from rt_server.store._sqlalchemy_internals import compiled_insert
from rt_server.store.engine import READ_ONLY

# What the core's database functions accept: an engine (the function runs its
# own transaction) or a connection (it runs inside the caller's transaction, in
# a savepoint, so it is still all-or-nothing and the caller can compose several
# calls into one commit).
Bind = Engine | Connection


@contextmanager
def transaction(bind: Bind) -> Iterator[Connection]:
    """One atomic unit of work on ``bind``; see ``Bind``."""
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            yield conn
    elif bind.in_transaction():
        with bind.begin_nested():
            yield bind
    else:
        with bind.begin():
            yield bind


@contextmanager
def within(bind: Bind) -> Iterator[Connection]:
    """``transaction``, but inside the caller's transaction without a savepoint of its own.

    For functions that check everything before their first write, so a refusal
    leaves the caller's transaction as it was; a database error in one of their
    writes fails the caller's transaction, as it would the caller's own write.
    A savepoint (two more statements) bought nothing there, on every call.
    """
    if isinstance(bind, Connection) and bind.in_transaction():
        yield bind
    else:
        with transaction(bind) as conn:
            yield conn


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC (what every timestamp column holds)."""
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime | None) -> dt.datetime:
    """``value`` (default: now) as aware UTC. Raises ``ValueError`` for a naive datetime."""
    if value is None:
        return utcnow()
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime given where a timezone-aware one is required")
    return value.astimezone(dt.UTC)


@contextmanager
def reading(bind: Bind) -> Iterator[Connection]:
    """A connection for reads: a fresh read-only one from an engine, else the caller's."""
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            yield conn.execution_options(**READ_ONLY)
    else:
        yield bind


def bulk_insert(conn: Connection, table: Table, columns: Mapping[str, Sequence[Any]]) -> None:
    """Insert rows given column by column (``{column name: values}``, equal lengths).

    The same as ``conn.execute(insert(table), [dict, ...])`` -- the statement
    SQLAlchemy compiles for the dialect, each value through its column type's
    bind processor, one executemany -- without SQLAlchemy's per-row parameter
    processing, which costs more than the database's own work on a large
    import. Each column is converted as a whole, each distinct value once
    (dates and decimals repeat). On PostgreSQL the rows go in by ``COPY``:
    the server parses one stream instead of planning and executing an INSERT
    a row (the same constraints are checked, the same errors raised).
    """
    names = tuple(columns)
    if not names or not len(columns[names[0]]):
        return
    sql, order, processors = compiled_insert(conn.dialect, table, names)
    values = [columns[name] for name in names]
    for i, process in processors:
        distinct = {v: process(v) for v in set(values[i]) if v is not None}
        values[i] = list(map(distinct.get, values[i]))
    if conn.dialect.name == "postgresql":
        _copy(conn, table, names, values)
        return
    params: list[Any]
    if isinstance(order, tuple):
        params = list(zip(*(values[i] for i in order), strict=True))
    else:
        params = [dict(zip(order, row, strict=True)) for row in zip(*values, strict=True)]
    conn.exec_driver_sql(sql, params)


def _copy(conn: Connection, table: Table, names: tuple[str, ...], values: list[Any]) -> None:
    """``COPY table (names) FROM STDIN`` of the rows, in the connection's transaction."""
    quote = conn.dialect.identifier_preparer
    sql = (
        f"COPY {quote.format_table(table)} ({', '.join(quote.quote(n) for n in names)}) FROM STDIN"
    )
    dbapi = conn.dialect.loaded_dbapi
    driver: Any = conn.connection.dbapi_connection  # psycopg's connection: it has copy()
    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:
            for row in zip(*values, strict=True):
                copy.write_row(row)
    except dbapi.Error as exc:
        # As SQLAlchemy would have raised it for an INSERT (IntegrityError, ...).
        raise DBAPIError.instance(sql, None, exc, dbapi.Error, dialect=conn.dialect) from exc
