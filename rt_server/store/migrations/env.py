"""Alembic environment of the district database (run by ``migrations.HISTORY.upgrade``)."""

from rt_client._migrations import run_env
from rt_server.store.schema import METADATA

run_env(METADATA)
