"""Databases for tests, on SQLite or on the PostgreSQL server ``make test`` starts.

``make test`` runs pytest under ``scripts/test_postgres.py``, which starts a
throwaway PostgreSQL on loopback and sets ``RT_TEST_POSTGRES_URL``. Tests that
take the ``databases`` fixture (``tests/conftest.py``) run once per backend;
each gets fresh databases, dropped afterwards. Suites with their own
longer-lived fixtures use ``Databases`` directly (``Databases("postgres", dir)``
and ``drop_all()`` at teardown).

On PostgreSQL a test's "database" is a schema of its own in the one test
database, selected by the URL (``options=-csearch_path=...``): creating a
schema takes milliseconds where creating a database takes a tenth of a second,
and the code under test sees an empty database all the same. Each URL also
names its connections (``application_name``), so that teardown can end the
connections of a server a failed test left running.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest
import sqlalchemy as sa

from rt_server.store import make_engine, migrations

# A database on a throwaway server whose user may create schemas.
POSTGRES_URL: Final = os.environ.get("RT_TEST_POSTGRES_URL", "")
BACKENDS: Final = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@dataclass
class Databases:
    """The database backend of one test (or suite), and fresh databases on it."""

    backend: str  # "sqlite" or "postgres"
    directory: Path  # where SQLite files go
    created: list[str] = field(default_factory=list)

    @property
    def postgres(self) -> bool:
        return self.backend == "postgres"

    def url(self, name: str) -> str:
        """A new, empty database: a file on SQLite, a schema of its own on PostgreSQL."""
        if not self.postgres:
            return f"sqlite:///{self.directory / name}.db"
        if not POSTGRES_URL:
            pytest.skip("needs PostgreSQL: run `make test`, or set RT_TEST_POSTGRES_URL")
        schema = f"rt_{uuid.uuid4().hex[:12]}_{name.replace('-', '_')}"[:63].lower()
        with _admin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        self.created.append(schema)
        url = sa.engine.make_url(POSTGRES_URL).update_query_dict(
            {"options": f"-csearch_path={schema}", "application_name": schema}
        )
        return url.render_as_string(hide_password=False)

    def district_url(self, name: str) -> str | None:
        """A district's database: None on SQLite (the default file, which ``rt serve``
        creates on first start); on PostgreSQL a new one, upgraded as ``rt db upgrade``
        does (a server never migrates PostgreSQL itself)."""
        if not self.postgres:
            return None
        url = self.url(name)
        engine = make_engine(url)
        try:
            migrations.HISTORY.upgrade(engine)
        finally:
            engine.dispose()
        return url

    def drop_all(self) -> None:
        if not self.created:
            return
        with _admin() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = ANY(:names) AND pid <> pg_backend_pid()"
                ),
                {"names": self.created},
            )
            for schema in self.created:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        self.created.clear()


def _admin() -> sa.Connection:
    engine = sa.create_engine(
        POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    return engine.connect()
