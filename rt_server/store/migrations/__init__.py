"""Schema migrations of the district database (Alembic), and the checks servers make.

The scripts live beside this file (``env.py``, ``versions/``) and run from
code, so an installed package migrates its database exactly as a checkout
does. ``rt db upgrade`` applies them; ``rt serve`` refuses to start on a
database that is not at this code's newest revision, with one exception: a
brand-new, empty SQLite file (the embedded default, and the one-command demo)
is created at the newest revision on first start. PostgreSQL is never
migrated implicitly: several replicas share it, and changing a production
schema is an operator's decision (``rt db upgrade``, after a backup).

``HISTORY`` names this database's scripts; its ``state``, ``upgrade`` and
``check_at_head`` (``rt_client._migrations``, shared by both databases) do the work.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from sqlalchemy.engine import Engine

from rt_client import _migrations
from rt_client._migrations import SchemaState

__all__ = ["HISTORY", "SchemaState", "prepare_for_serving"]

log = logging.getLogger("rt_server.store")

HISTORY: Final = _migrations.SchemaHistory(
    what="district database",
    script_location=Path(__file__).parent,
    upgrade_command="rt db upgrade --config FILE",
    marker_table="requests",
)


def prepare_for_serving(engine: Engine) -> None:
    """What ``rt serve`` does before it serves: create a fresh SQLite database, else check.

    Raises ``SchemaVersionError`` with what the operator should run.
    """
    if engine.dialect.name == "sqlite" and HISTORY.state(engine).empty:
        _, revision = HISTORY.upgrade(engine)
        log.info("created the district database at revision %s", revision)
        return
    HISTORY.check_at_head(engine)
