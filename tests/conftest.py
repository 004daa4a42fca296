"""Fixtures every suite may use: the database backend under test (see ``tests._databases``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._databases import BACKENDS, POSTGRES_URL, Databases


@pytest.fixture(params=BACKENDS)
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Databases]:
    """The test runs once on SQLite and once on PostgreSQL (skipped without a server)."""
    if request.param == "postgres" and not POSTGRES_URL:
        pytest.skip("needs PostgreSQL: run `make test`, or set RT_TEST_POSTGRES_URL")
    dbs = Databases(request.param, tmp_path)
    try:
        yield dbs
    finally:
        dbs.drop_all()
