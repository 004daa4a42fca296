"""Schema migrations of the district database (Alembic), and the checks servers make.

The scripts live beside this file (``env.py``, ``versions/``) and run from
code, so an installed package migrates its database exactly as a checkout
does. ``rt db upgrade`` applies them; ``rt serve`` refuses to start on a
database that is not at this code's newest revision, with one exception: a
brand-new, empty SQLite file (the embedded default, and the one-command demo)
is created at the newest revision on first start. PostgreSQL is never
migrated implicitly: several replicas share it, and changing a production
schema is an operator's decision (``rt db upgrade``, after a backup).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from sqlalchemy.engine import Engine

from rt_client import _migrations
from rt_client._migrations import SchemaState

__all__ = ["HISTORY", "SchemaState", "check_at_head", "prepare_for_serving", "state", "upgrade"]

log = logging.getLogger("rt_server.store")

HISTORY: Final = _migrations.SchemaHistory(
    what="district database",
    script_location=Path(__file__).parent,
    upgrade_command="rt db upgrade --config FILE",
    marker_table="requests",
)


def state(engine: Engine) -> SchemaState:
    """Where the database stands. Raises ``ConfigError`` if it cannot be reached."""
    return _migrations.schema_state(engine, HISTORY)


def upgrade(engine: Engine, target: str = "head") -> tuple[str | None, str]:
    """Migrate to ``target`` (default: the newest revision); returns (from, to).

    Raises ``SchemaVersionError`` (the database is newer than this code) or
    ``ConfigError`` (unreachable, or the migration failed and was rolled back).
    """
    return _migrations.upgrade(engine, HISTORY, target)


def check_at_head(engine: Engine) -> None:
    """Raises ``SchemaVersionError`` unless the database is at the newest revision."""
    _migrations.check_at_head(engine, HISTORY)


def prepare_for_serving(engine: Engine) -> None:
    """What ``rt serve`` does before it serves: create a fresh SQLite database, else check.

    Raises ``SchemaVersionError`` with what the operator should run.
    """
    if engine.dialect.name == "sqlite" and state(engine).empty:
        _, revision = upgrade(engine)
        log.info("created the district database at revision %s", revision)
        return
    check_at_head(engine)
