"""The fence around the SQLAlchemy internals the store relies on (store._sqlalchemy_internals).

``CursorResult.cursor_strategy`` (the export's fetch) and ``SQLCompiler.positiontup``
(the import's bulk insert) are not public API. These tests assert that they
exist and behave as the code assumes, so an upgrade of SQLAlchemy that changes
them fails here, by name, rather than as wrong rows in a transfer.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import (
    Column,
    Connection,
    Date,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    insert,
    select,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.types import NullType

from rt_server.core.tables import TABLES
from rt_server.store._sqlalchemy_internals import compiled_insert, fetch_tuples
from rt_server.store.schema import RECORD_TABLES

_METADATA = MetaData()
_PROBE = Table(
    "probe",
    _METADATA,
    Column("sq", Integer, primary_key=True),
    Column("name", String(20)),
    Column("born", Date),
    Column("score", Numeric(5, 2)),
)


@pytest.fixture
def probe_table(engine: Engine) -> Iterator[Engine]:
    """The probe table, new for the test (PostgreSQL's database outlives a test: drop it after)."""
    _PROBE.drop(engine, checkfirst=True)
    _PROBE.create(engine)
    yield engine
    _PROBE.drop(engine, checkfirst=True)


@pytest.fixture
def probe(probe_table: Engine) -> Engine:
    engine = probe_table
    with engine.begin() as conn:
        conn.execute(
            insert(_PROBE),
            [
                {"sq": 1, "name": "Ada", "born": None, "score": None},
                {"sq": 2, "name": None, "born": None, "score": None},
                {"sq": 3, "name": "Zoë", "born": None, "score": None},
            ],
        )
    return engine


def _query() -> Any:
    columns = [type_coerce(c, NullType()).label(c.name) for c in _PROBE.c]
    return select(*columns).where(_PROBE.c.sq >= bindparam("low")).order_by(_PROBE.c.sq)


# --- cursor_strategy: the export's fetch --------------------------------------


def test_a_cursor_result_has_the_fetch_strategy_the_export_calls(probe: Engine) -> None:
    with probe.connect() as conn:
        result = conn.execute(_query(), {"low": 1})
        assert isinstance(result, CursorResult)
        assert callable(result.cursor_strategy.fetchall)
        assert result.cursor is not None  # the DBAPI cursor the strategy reads
        result.close()


def test_fetch_tuples_is_result_all_without_rows(probe: Engine) -> None:
    with probe.connect() as conn:
        expected = [tuple(row) for row in conn.execute(_query(), {"low": 2}).all()]
        fetched = fetch_tuples(conn, _query(), {"low": 2})
    assert fetched == expected == [(2, None, None, None), (3, "Zoë", None, None)]
    # The driver's own tuples, indexable and zip-able, not SQLAlchemy Rows.
    assert all(type(row) is tuple for row in fetched)
    assert fetched[-1][0] == 3


def test_fetch_tuples_of_an_empty_page(probe: Engine) -> None:
    with probe.connect() as conn:
        assert list(fetch_tuples(conn, _query(), {"low": 99})) == []


class _FailingCursor:
    """A DBAPI cursor whose fetch fails as a busy SQLite database does."""

    description = None

    def fetchall(self) -> list[Any]:
        raise sqlite3.OperationalError("database is locked")

    def close(self) -> None:
        pass


def test_a_driver_error_in_the_fetch_is_still_an_operational_error(engine: Engine) -> None:
    """The interceptor maps sqlalchemy's OperationalError to UNAVAILABLE: it must stay wrapped."""
    if engine.dialect.name != "sqlite":
        pytest.skip("the failing cursor imitates sqlite3")
    _PROBE.create(engine)
    with engine.connect() as conn:
        result = conn.execute(_query(), {"low": 1})
        with pytest.raises(sqlalchemy.exc.OperationalError, match="database is locked"):
            result.cursor_strategy.fetchall(result, _FailingCursor())


# --- positiontup: the import's bulk insert -------------------------------------


def _placeholders(sql: str) -> list[str]:
    """The column list of ``INSERT INTO t (a, b, ...) VALUES ...``."""
    match = re.search(r"\(([^)]*)\)\s*VALUES", sql)
    assert match is not None, sql
    return [name.strip().strip('"') for name in match.group(1).split(",")]


@pytest.mark.parametrize("columns", [("sq", "name", "born"), ("score", "born", "sq", "name")])
def test_a_positional_insert_names_its_parameters_in_order(columns: tuple[str, ...]) -> None:
    """SQLite (qmark): ``positiontup`` lists the bind names in the statement's order."""
    dialect = sqlite.dialect()
    compiled = insert(_PROBE).compile(dialect=dialect, column_keys=list(columns))
    assert compiled.positional
    assert compiled.positiontup is not None
    assert list(compiled.positiontup) == _placeholders(str(compiled))
    assert sorted(compiled.positiontup) == sorted(columns)  # bind names are the column keys
    sql, order, _ = compiled_insert(dialect, _PROBE, columns)
    assert sql == str(compiled)
    assert isinstance(order, tuple)
    assert [columns[i] for i in order] == list(compiled.positiontup)


def test_a_named_insert_binds_the_column_keys() -> None:
    """PostgreSQL (psycopg, pyformat): named parameters, one per column key."""
    dialect = postgresql.psycopg.dialect()
    columns = ("score", "sq", "name")
    compiled = insert(_PROBE).compile(dialect=dialect, column_keys=list(columns))
    assert not compiled.positional
    for name in columns:
        assert f"%({name})s" in str(compiled)
    _, order, _ = compiled_insert(dialect, _PROBE, columns)
    assert order == list(columns)


def test_every_record_table_compiles_for_both_dialects() -> None:
    """The same holds for the real tables, column names in upper case included."""
    for code, spec in TABLES.items():
        columns = ("PID", *spec.column_names)
        for dialect in (sqlite.dialect(), postgresql.psycopg.dialect()):
            sql, order, _ = compiled_insert(dialect, RECORD_TABLES[code], columns)
            if isinstance(order, tuple):
                assert [columns[i] for i in order] == _placeholders(sql)
            else:
                assert order == list(columns)


def test_bulk_insert_rows_land_in_their_columns(probe_table: Engine) -> None:
    """End to end on the database under test: reordered columns, one executemany."""
    from rt_server.store._db import bulk_insert

    engine = probe_table
    with engine.begin() as conn:
        bulk_insert(conn, _PROBE, {"name": ["b", "a"], "sq": [20, 10]})
    with engine.connect() as conn:
        rows = _rows(conn)
    assert rows == [(10, "a"), (20, "b")]


def _rows(conn: Connection) -> list[tuple[Any, ...]]:
    query = select(_PROBE.c.sq, _PROBE.c.name).order_by(_PROBE.c.sq)
    return [tuple(row) for row in conn.execute(query)]
