"""The SQL of the live link to a SIS database laid out as Aeries lays it out.

The SIS's tables are not ours: they are found by reflection (SQLAlchemy Core,
so any dialect it supports: SQL Server as Aeries runs, PostgreSQL, SQLite),
matched by Aeries' table and column codes case-insensitively (PostgreSQL
folds unquoted names to lower case). ``open_sis`` checks the whole layout
once and names every missing table and column, so ``rt serve`` refuses to
start rather than fail at the first approval.

Reads (the prior district's side) return the driver's values as they are;
``rt_server.sis.live`` turns them into checked rows. Writes (the new
district's ``sis_write_back``) put one import's rows into the SIS in one
transaction, numbered as Aeries numbers them: the next SQ of the student in
that table, source tag ``RT``. A row the SIS already holds with the same key
and values is left alone, so writing the same import twice writes it once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    Table,
    create_engine,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from rt_client.errors import ConfigError, InvalidInput
from rt_server.core.tables import TABLES

__all__ = [
    "SOURCE_TAG",
    "STUDENT_COLUMNS",
    "SisDatabase",
    "SisLayoutError",
    "WriteBackCounts",
    "create_layout",
    "expected_layout",
    "open_sis",
]

SOURCE_TAG: Final = "RT"
# STU: the student's permanent ID, school, names, birth date, sex, grade, statewide id.
STUDENT_COLUMNS: Final = ("ID", "SC", "LN", "FN", "MN", "BD", "SX", "GR", "CID")


def expected_layout() -> dict[str, tuple[str, ...]]:
    """Table code -> the column codes the link needs: STU, then the eight record tables."""
    layout: dict[str, tuple[str, ...]] = {"STU": STUDENT_COLUMNS}
    for code, spec in TABLES.items():
        layout[code] = ("PID", *spec.column_names)
    return layout


class SisLayoutError(ConfigError):
    """The SIS database lacks tables or columns the link needs (``missing``: each one named)."""

    def __init__(self, where: str, missing: list[str]) -> None:
        super().__init__(
            f"the SIS database {where} is not laid out as Aeries lays it out: "
            + "; ".join(missing)
            + ". Point sis_database_url at the SIS's database (a login that can see these "
            "tables), or leave it out to use this server's own tables."
        )
        self.missing = missing


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "(unreadable URL)"


@dataclass
class SisDatabase:
    """The SIS's reflected tables: code -> table, and code -> column code -> its column."""

    engine: Engine
    tables: dict[str, Table]
    columns: dict[str, dict[str, Column[Any]]] = field(default_factory=dict)

    def dispose(self) -> None:
        self.engine.dispose()

    def read_rows(self, code: str, pid: str) -> Iterator[tuple[Any, ...]]:
        """Student ``pid``'s rows of table ``code`` in SQ order: the spec's columns, as stored."""
        cols = self.columns[code]
        names = TABLES[code].column_names
        query = select(*(cols[n] for n in names)).where(cols["PID"] == pid).order_by(cols["SQ"])
        with self.engine.connect() as conn:
            yield from conn.execute(query)

    def write_import(
        self,
        pid: str,
        rows: Mapping[str, Sequence[tuple[Mapping[str, Any], bool]]],
        convert: Callable[[str, tuple[Any, ...]], dict[str, Any]],
    ) -> WriteBackCounts:
        """Write one import's rows (code -> (row dict, replaces the SIS row of its key)).

        One transaction. ``convert(code, stored values)`` turns a row the SIS
        holds into a row dict, to compare with ours. Raises ``InvalidInput``
        (the student is not in the SIS's STU; nothing written).
        """
        counts = WriteBackCounts()
        stu = self.columns["STU"]
        with self.engine.begin() as conn:
            found = conn.execute(select(stu["ID"]).where(stu["ID"] == pid)).first()
            if found is None:
                raise InvalidInput(
                    f"student {pid} is not in the SIS's STU table, so the import cannot be "
                    "written back: enroll the student in the SIS under this ID, then import again"
                )
            for code, table_rows in rows.items():
                if not table_rows:
                    continue
                spec = TABLES[code]
                cols = self.columns[code]
                names = spec.column_names
                held: dict[tuple[Any, ...], list[tuple[int, Mapping[str, Any]]]] = {}
                highest = 0
                query = select(*(cols[n] for n in names)).where(cols["PID"] == pid)
                for stored in conn.execute(query):
                    found_row = convert(code, tuple(stored))
                    key = tuple(found_row[n] for n in spec.natural_key)
                    held.setdefault(key, []).append((found_row["SQ"], found_row))
                    highest = max(highest, found_row["SQ"])
                for row, replaces in table_rows:
                    key = tuple(row[n] for n in spec.natural_key)
                    data = [row[n] for n in spec.data_columns]
                    same_key = held.get(key, [])
                    if any([r[n] for n in spec.data_columns] == data for _, r in same_key):
                        counts.unchanged += 1
                        continue
                    values = {cols[n].name: row[n] for n in spec.data_columns}
                    values[cols["SRC"].name] = SOURCE_TAG
                    if replaces and same_key:
                        sq = same_key[0][0]
                        conn.execute(
                            update(self.tables[code])
                            .where(cols["PID"] == pid, cols["SQ"] == sq)
                            .values(values)
                        )
                        counts.updated += 1
                    else:
                        highest += 1
                        sq = highest
                        values[cols["PID"].name] = pid
                        values[cols["SQ"].name] = sq
                        conn.execute(insert(self.tables[code]).values(values))
                        counts.inserted += 1
                    held.setdefault(key, []).append((sq, {**row, "SQ": sq}))
        return counts


@dataclass
class WriteBackCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def open_sis(url: str, *, write: bool = False) -> SisDatabase:
    """Connect to the SIS database at ``url`` and reflect its tables.

    Raises ``ConfigError`` when it cannot be reached and ``SisLayoutError``
    naming every table and column it lacks (the password is never shown).
    ``write``: the link writes imports back (the same tables are needed).
    """
    where = _safe_url(url)
    try:
        engine = create_engine(url)
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"sis_database_url {where}: not a database URL this server can use"
        ) from exc
    try:
        found_tables = {name.upper(): name for name in inspect(engine).get_table_names()}
        metadata = MetaData()
        sis = SisDatabase(engine, {})
        missing: list[str] = []
        for code, wanted in expected_layout().items():
            name = found_tables.get(code)
            if name is None:
                missing.append(f"table {code} is missing")
                continue
            table = Table(name, metadata, autoload_with=engine)
            by_code = {c.name.upper(): c for c in table.columns}
            absent = [c for c in wanted if c not in by_code]
            if absent:
                missing.append(f"table {code} lacks column(s) {', '.join(absent)}")
                continue
            sis.tables[code] = table
            sis.columns[code] = {c: by_code[c] for c in wanted}
    except sa_exc.SQLAlchemyError as exc:
        engine.dispose()
        raise ConfigError(
            f"sis_database_url {where}: cannot read the SIS database "
            f"({type(exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc).__name__}); "
            "check that it runs and that the login may read it"
        ) from exc
    if missing:
        engine.dispose()
        raise SisLayoutError(where, missing)
    return sis


def create_layout(url: str) -> None:
    """Create empty Aeries-layout tables at ``url`` (a demo's or a test's SIS database)."""
    from sqlalchemy import Boolean, Date, Integer, Numeric, String

    from rt_server.core.tables import ColumnKind

    kinds: dict[ColumnKind, Any] = {
        ColumnKind.STRING: String(64),
        ColumnKind.INT: Integer(),
        ColumnKind.BOOL: Boolean(),
        ColumnKind.DATE: Date(),
        ColumnKind.DECIMAL: Numeric(9, 2),
    }
    metadata = MetaData()
    Table(
        "STU",
        metadata,
        Column("ID", String(16), primary_key=True),
        *(
            Column(c, Date() if c == "BD" else Integer() if c == "GR" else String(64))
            for c in STUDENT_COLUMNS[1:]
        ),
    )
    for code, spec in TABLES.items():
        Table(
            code,
            metadata,
            Column("PID", String(16), primary_key=True),
            Column("SQ", Integer(), primary_key=True, autoincrement=False),
            *(Column(c.name, kinds[c.kind]) for c in spec.columns if c.name != "SQ"),
        )
    engine = create_engine(url)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()
