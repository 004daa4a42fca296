"""Database files are readable by their owner only (0600) from the moment they exist.

Real files, made by the real ``make_engine`` (the district) and
``RegistryStore.open`` (the registry) and written to, under the usual
permissive umask (0022, with which SQLite alone would make them 0644).
"""

from __future__ import annotations

import logging
import os
import random
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from registry.authcode import hash_authorization_code
from registry.store import RegistryStore
from rt_client._sqlite_files import restrict_sqlite_files
from rt_client.ids import DistrictCode
from rt_server.store import students
from rt_server.store.engine import make_engine
from rt_server.store.schema import create_schema
from scripts import samples

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(directory: Path, name: str) -> dict[str, int]:
    """The mode of the database ``name`` and of every file SQLite keeps beside it."""
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in directory.glob(f"{name}*")}


def add_student(engine: sa.Engine, number: int = 1) -> None:
    student = samples.sample_student(random.Random(number), number)
    students.add_student(engine, student, actor="registrar", now=NOW)


def test_a_fresh_district_database_and_its_wal_are_0600(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'district.db'}")
    try:
        create_schema(engine)
        add_student(engine)
        with engine.connect():  # the pool's connection keeps -wal and -shm in place
            found = modes(tmp_path, "district.db")
    finally:
        engine.dispose()
    assert set(found) == {"district.db", "district.db-wal", "district.db-shm"}
    assert set(found.values()) == {0o600}, found


def test_a_fresh_registry_database_and_its_journal_are_0600(tmp_path: Path) -> None:
    registry = RegistryStore.open(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        with registry.transaction() as tx:
            tx.add_district(
                DistrictCode("1964733"), "LAUSD", [], hash_authorization_code("x", 16), [], NOW
            )
            # The registry's SQLite keeps a rollback journal while a write is under way.
            found = modes(tmp_path, "registry.db")
    finally:
        registry.close()
    assert set(found) == {"registry.db", "registry.db-journal"}
    assert set(found.values()) == {0o600}, found
    assert modes(tmp_path, "registry.db") == {"registry.db": 0o600}


def test_existing_files_of_0644_are_corrected_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'district.db'}"
    first = make_engine(url)
    try:
        create_schema(first)
        add_student(first)
        with first.connect():
            for path in tmp_path.glob("district.db*"):
                path.chmod(0o644)  # as an older version (or a copy) left them
            with caplog.at_level(logging.INFO, logger="rt_client.db"):
                second = make_engine(url)
            try:
                add_student(second, 2)
                found = modes(tmp_path, "district.db")
            finally:
                second.dispose()
    finally:
        first.dispose()
    assert set(found) == {"district.db", "district.db-wal", "district.db-shm"}
    assert set(found.values()) == {0o600}, found
    corrected = [r for r in caplog.records if "0600" in r.getMessage()]
    assert len(corrected) == 1 and corrected[0].levelno == logging.INFO
    assert "district.db (was 0644)" in corrected[0].getMessage()


def test_an_existing_0600_database_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'district.db'}"
    make_engine(url).dispose()
    with caplog.at_level(logging.INFO, logger="rt_client.db"):
        make_engine(url).dispose()
    assert modes(tmp_path, "district.db") == {"district.db": 0o600}
    assert not caplog.records


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:shared?mode=memory&cache=shared&uri=true",
        "postgresql+psycopg://rt:secret@db.example/rt",
    ],
)
def test_urls_that_are_not_a_file_of_ours_are_left_alone(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert restrict_sqlite_files(url) is None
    assert list(tmp_path.iterdir()) == []
