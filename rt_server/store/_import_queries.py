"""The importer's reads: the student's highest SQ per table, and the held rows a chunk may match."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

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
)

from rt_server.core.tables import TableSpec
from rt_server.store.schema import RECORD_TABLES


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
