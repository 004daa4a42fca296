"""Schema migrations of the registry database (Alembic), and the check before serving.

The scripts live beside this file (``env.py``, ``versions/``) and run from
code. ``rt-registry init`` creates the database at the newest revision;
``rt-registry db upgrade`` migrates an existing one; every other command
(``serve`` included) refuses a database that is not at this code's newest
revision, so replicas sharing one PostgreSQL never run against a schema they
do not know.

``HISTORY`` names this database's scripts; its ``state``, ``upgrade`` and
``check_at_head`` (``rt_client._migrations``, shared by both databases) do the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from rt_client import _migrations
from rt_client._migrations import SchemaState

__all__ = ["HISTORY", "SchemaState"]

HISTORY: Final = _migrations.SchemaHistory(
    what="registry database",
    script_location=Path(__file__).parent,
    upgrade_command="rt-registry --home DIR db upgrade",
    marker_table="districts",
)
