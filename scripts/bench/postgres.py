"""The benchmark's districts on PostgreSQL (``--postgres URL``; ``make bench`` starts one).

Each seeded SQLite template becomes a PostgreSQL template database once (the
schema by the migrations, then every row copied); before each measured run a
district's database is created afresh from it (``CREATE DATABASE ... TEMPLATE``),
as the SQLite runs copy the file. The peer pipeline is the same (CSV + GPG into
SQLite) whichever database the districts run on.
"""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

COPY_ROWS = 20_000


class Postgres:
    """A PostgreSQL server whose user may create databases (``scripts/test_postgres.py``'s)."""

    def __init__(self, url: str) -> None:
        self.url = sa.engine.make_url(url)
        self._admin = sa.create_engine(
            self.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        self._templates: dict[Path, str] = {}

    def url_of(self, database: str) -> str:
        return self.url.set(database=database).render_as_string(hide_password=False)

    def restore(self, database: str, template_file: Path) -> str:
        """Database ``database``, a fresh copy of the SQLite template; returns its URL."""
        template = self._template(template_file)
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
        return self.url_of(database)

    def drop(self, database: str) -> None:
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def close(self) -> None:
        for name in self._templates.values():
            self.drop(name)
        self._admin.dispose()

    def _template(self, sqlite_file: Path) -> str:
        name = self._templates.get(sqlite_file)
        if name is not None:
            return name
        from rt_server.store import make_engine, migrations
        from rt_server.store.schema import METADATA

        name = "tpl_" + re.sub(r"[^a-z0-9]+", "_", sqlite_file.stem.lower())[:50]
        self.drop(name)
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        target = make_engine(self.url_of(name))
        source = make_engine(f"sqlite:///{sqlite_file}")
        try:
            migrations.HISTORY.upgrade(target)
            with source.connect() as read, target.begin() as write:
                for table in METADATA.sorted_tables:
                    result = read.execute(sa.select(table))
                    while rows := result.mappings().fetchmany(COPY_ROWS):
                        write.execute(sa.insert(table), [dict(r) for r in rows])
                    column = table.autoincrement_column  # its sequence, past the copied ids
                    if column is not None:
                        write.execute(
                            sa.text(
                                f"SELECT setval(pg_get_serial_sequence(:t, :c), "
                                f'(SELECT COALESCE(MAX("{column.name}"), 0) + 1 '
                                f'FROM "{table.name}"), false)'
                            ),
                            {"t": f'"{table.name}"', "c": column.name},
                        )
        finally:
            source.dispose()
            target.dispose()
        self._templates[sqlite_file] = name
        return name
