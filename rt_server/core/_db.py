"""Plumbing shared by the core's database functions: transactions and the clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from rt_server.db.schema import READ_ONLY

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
