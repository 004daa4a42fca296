"""The two places the store reaches under SQLAlchemy's public API, for speed.

- ``fetch_tuples`` (export): a result's rows as the driver's tuples, through
  ``CursorResult.cursor_strategy`` -- no ``Row`` made per tuple.
- ``compiled_insert`` (import, ``_db.bulk_insert``): the order of an INSERT's
  positional parameters, from ``SQLCompiler.positiontup``.

Both are SQLAlchemy internals (pinned in pyproject.toml); when an upgrade
changes them, ``tests/unit/district/test_sqlalchemy_internals.py`` fails, and
this module is the one place to adapt.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Dialect, Select, Table, insert

__all__ = ["compiled_insert", "fetch_tuples"]


def fetch_tuples(conn: Connection, query: Select[*tuple[Any, ...]], params: dict[str, Any]) -> Any:
    """The rows of ``query`` as the driver's tuples.

    What ``Result.all()`` does -- the same fetch through the result's fetch
    strategy, the same handling of a driver error (wrapped, so a busy database
    is still an ``OperationalError``) -- without making a ``Row`` of each
    tuple, which is about a tenth of an export's time.
    """
    result = conn.execute(query, params)
    return result.cursor_strategy.fetchall(result, result.cursor)


@functools.lru_cache(maxsize=256)
def compiled_insert(
    dialect: Dialect, table: Table, columns: tuple[str, ...]
) -> tuple[str, tuple[int, ...] | list[str], list[tuple[int, Callable[[Any], Any]]]]:
    """(SQL, how to order a row's values for the driver, per-column bind processors)."""
    compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
    order: tuple[int, ...] | list[str]
    if compiled.positional:
        assert compiled.positiontup is not None
        order = tuple(columns.index(name) for name in compiled.positiontup)
    else:
        order = list(columns)  # named parameters: the bind names are the column keys
    processors: list[tuple[int, Callable[[Any], Any]]] = []
    for i, name in enumerate(columns):
        column_type = table.c[name].type
        process = column_type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors.append((i, process))
    return str(compiled), order, processors
