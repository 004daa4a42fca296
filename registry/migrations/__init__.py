"""Schema migrations of the registry database (Alembic), and the check before serving.

The scripts live beside this file (``env.py``, ``versions/``) and run from
code. ``rt-registry init`` creates the database at the newest revision;
``rt-registry db upgrade`` migrates an existing one; every other command
(``serve`` included) refuses a database that is not at this code's newest
revision, so replicas sharing one PostgreSQL never run against a schema they
do not know.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from sqlalchemy.engine import Engine

from rt_client import _migrations
from rt_client._migrations import SchemaState

__all__ = ["HISTORY", "SchemaState", "check_at_head", "state", "upgrade"]

HISTORY: Final = _migrations.SchemaHistory(
    what="registry database",
    script_location=Path(__file__).parent,
    upgrade_command="rt-registry --home DIR db upgrade",
    marker_table="districts",
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
