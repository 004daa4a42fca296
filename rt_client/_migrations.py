"""Alembic plumbing shared by the district database and the registry database.

Both servers keep their migration scripts inside their package
(``rt_server/store/migrations/``, ``registry/migrations/``) and run them from
code, never from an ``alembic.ini`` in the working directory, so an installed
package migrates its database the same way a checkout does. This module holds
what the two have in common: which revision a database is at, upgrading it,
and refusing to serve on a database this version of the code does not fit.

It lives in ``rt_client`` only because that is the package both servers
depend on; nothing in the protocol library uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from rt_client.errors import ConfigError, SchemaVersionError

__all__ = [
    "SchemaHistory",
    "SchemaState",
    "check_at_head",
    "named_metadata",
    "run_env",
    "schema_state",
    "upgrade",
]

# Any constant will do: it names "the migration lock" for pg_advisory_xact_lock,
# so concurrent upgrades (two replicas deployed at once) run one after the other.
_PG_MIGRATION_LOCK = 0x5254_4D49_4752  # "RTMIGR"


def named_metadata() -> sa.MetaData:
    """A ``MetaData`` whose constraints are named by the convention both databases follow.

    Migrations address constraints by name (to drop or alter them, on SQLite
    as on PostgreSQL); the convention makes those names the same everywhere.
    """
    return sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


@dataclass(frozen=True)
class SchemaHistory:
    """One database's migration history, and how its operator applies it."""

    what: str  # "district database" / "registry database", for messages
    script_location: Path  # the package folder holding env.py and versions/
    upgrade_command: str  # what the operator runs, e.g. "rt db upgrade --config FILE"
    # A table every revision has: a database that holds it but no alembic_version
    # was created before migrations existed (by create_all, at the first revision).
    marker_table: str

    def config(self, connection: Connection | None = None) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.script_location))
        if connection is not None:
            cfg.attributes["connection"] = connection
        return cfg

    def scripts(self) -> ScriptDirectory:
        return ScriptDirectory.from_config(self.config())

    @property
    def head(self) -> str:
        head = self.scripts().get_current_head()
        assert head is not None, "a migration history has at least one revision"
        return head

    @property
    def base(self) -> str:
        base = self.scripts().get_base()
        assert base is not None
        return base

    def state(self, engine: Engine) -> SchemaState:
        """Where the database stands. Raises ``ConfigError`` if it cannot be reached."""
        return schema_state(engine, self)

    def upgrade(self, engine: Engine, target: str = "head") -> tuple[str | None, str]:
        """Migrate to ``target`` (default: the newest revision); returns (from, to).

        Raises ``SchemaVersionError`` (the database is newer than this code) or
        ``ConfigError`` (unreachable, or the migration failed and was rolled back).
        """
        return upgrade(engine, self, target)

    def check_at_head(self, engine: Engine) -> None:
        """Raises ``SchemaVersionError`` unless the database is at the newest revision."""
        check_at_head(engine, self)


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands against the code's migration history."""

    current: str | None  # the database's revision; None if it has none
    head: str  # the newest revision this code knows
    empty: bool  # no tables at all: a brand-new database
    known: bool  # ``current`` is a revision of this code's history (or None)
    pre_migrations: bool  # tables from before migrations existed, no revision

    @property
    def at_head(self) -> bool:
        return self.current == self.head


def schema_state(engine: Engine, history: SchemaHistory) -> SchemaState:
    """Read the database's revision. Raises ``ConfigError`` if it cannot be reached."""
    scripts = history.scripts()
    head = history.head
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            tables = set(sa.inspect(conn).get_table_names())
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigError(f"cannot open the {history.what} ({_where(engine)}): {exc}") from exc
    known = current is None or _is_known(scripts, current)
    return SchemaState(
        current=current,
        head=head,
        empty=not tables,
        known=known,
        pre_migrations=current is None and history.marker_table in tables,
    )


def check_at_head(engine: Engine, history: SchemaHistory) -> None:
    """Refuse a database that is not at this code's newest revision.

    Raises ``SchemaVersionError`` saying what to do: upgrade the database (it
    is empty, from before migrations, or at an older revision) or the software
    (the database was migrated by a newer version).
    """
    state = schema_state(engine, history)
    if state.at_head:
        return
    where = _where(engine)
    if not state.known:
        raise SchemaVersionError(
            f"the {history.what} ({where}) is at revision {state.current}, which this version "
            f"of Records Transfer does not know (its newest is {state.head}): the database was "
            "upgraded by a newer version. Install that version here too, or point the config "
            "at the right database."
        )
    if state.current is None:
        found = "tables from before schema migrations" if state.pre_migrations else "no schema"
        raise SchemaVersionError(
            f"the {history.what} ({where}) has {found}; create or upgrade it with "
            f"`{history.upgrade_command}`, then start again."
        )
    raise SchemaVersionError(
        f"the {history.what} ({where}) is at revision {state.current} but this version needs "
        f"{state.head}; upgrade it with `{history.upgrade_command}` (back it up first), "
        "then start again."
    )


def upgrade(engine: Engine, history: SchemaHistory, target: str = "head") -> tuple[str | None, str]:
    """Migrate the database to ``target`` in one transaction; returns (from, to) revisions.

    A database created before migrations existed is first marked as being at
    the first revision (which is exactly the schema it was created with).
    Raises ``SchemaVersionError`` for a database newer than this code, and
    ``ConfigError`` when the database cannot be reached or the migration fails.
    """
    state = schema_state(engine, history)
    if not state.known:
        check_at_head(engine, history)  # raises, with the "newer version" message
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # SQLite alters a table by copying it and dropping the original,
                # and with foreign keys on, that drop cascades to the rows that
                # refer to it. The pragma only takes effect outside a transaction
                # (sqlite.org/lang_altertable.html, "other kinds of table schema
                # changes"); the keys are checked before the commit instead.
                _sqlite_foreign_keys(conn, on=False)
            try:
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        conn.execute(
                            sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK}
                        )
                    # Read again under the lock: another process may have just upgraded.
                    before = MigrationContext.configure(conn).get_current_revision()
                    cfg = history.config(conn)
                    if (
                        before is None
                        and history.marker_table in sa.inspect(conn).get_table_names()
                    ):
                        command.stamp(cfg, history.base)
                    command.upgrade(cfg, target)
                    after = MigrationContext.configure(conn).get_current_revision()
                    if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                        raise ConfigError(
                            f"upgrading the {history.what} ({_where(engine)}) would break "
                            "its foreign keys; nothing was changed"
                        )
            finally:
                if sqlite:
                    _sqlite_foreign_keys(conn, on=True)
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigError(
            f"upgrading the {history.what} ({_where(engine)}) failed; nothing was changed: {exc}"
        ) from exc
    assert after is not None
    return before, after


def _sqlite_foreign_keys(conn: Connection, *, on: bool) -> None:
    # On the driver's connection: SQLAlchemy would open a transaction first.
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def run_env(metadata: sa.MetaData) -> None:
    """The body of a package's ``env.py``: migrate on the connection the caller passed in.

    ``render_as_batch`` lets later revisions alter SQLite tables (which
    cannot ALTER most things) by copy-and-move, the same script on both databases.
    """
    from alembic import context as env

    connection = env.config.attributes.get("connection")
    if connection is None:
        raise ConfigError(
            "these migrations run from code (rt db upgrade / rt-registry db upgrade), "
            "not from the alembic command line"
        )
    env.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with env.begin_transaction():
        env.run_migrations()


def _is_known(scripts: ScriptDirectory, revision: str) -> bool:
    try:
        return scripts.get_revision(revision) is not None
    except Exception:  # noqa: BLE001 - alembic raises several kinds for an unknown id
        return False


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
