"""Alembic environment of the registry database (run by ``registry.migrations.HISTORY.upgrade``)."""

from registry.store import metadata
from rt_client._migrations import run_env

run_env(metadata)
