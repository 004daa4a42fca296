"""Fixtures for the district core: a real SQLite database per test, and factories."""

from __future__ import annotations

import datetime as dt
import os
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from protos.rt.v1 import common_pb2, peer_pb2
from rt_server.store import requests, students
from rt_server.store.engine import make_engine
from rt_server.store.schema import METADATA, create_schema

NOW = dt.datetime(2025, 3, 14, 15, 9, 26, tzinfo=dt.UTC)
REQUESTING_DISTRICT = "1964733"
REQUESTING_SCHOOL = "19647331932334"
PRIOR_DISTRICT = "0161192"
PRIOR_SCHOOL = "01611920130229"


# Set to a PostgreSQL URL (postgresql+psycopg://...) to run every database test on
# PostgreSQL too; its tables are dropped and re-created for each test.
POSTGRES_URL = os.environ.get("RT_TEST_POSTGRES_URL", "")
_BACKENDS = ["sqlite"] + (
    [pytest.param("postgres", marks=pytest.mark.postgres)] if POSTGRES_URL else []
)


@pytest.fixture(params=_BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'district.db'}")
    else:
        eng = make_engine(POSTGRES_URL)
        METADATA.drop_all(eng)
        with eng.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    create_schema(eng)  # the migrations, to the newest revision
    yield eng
    eng.dispose()


@pytest.fixture
def failing_inserts(engine: Engine) -> Callable[[str, bool], None]:
    """``failing_inserts(table, on)``: make every insert into ``table`` fail in the database."""

    def switch(table: str, on: bool) -> None:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.execute(
                    text(
                        f'CREATE TRIGGER fail_{table} BEFORE INSERT ON "{table}" '
                        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
                    )
                    if on
                    else text(f"DROP TRIGGER fail_{table}")
                )
            elif on:
                conn.execute(
                    text(
                        "CREATE OR REPLACE FUNCTION rt_fail() RETURNS trigger AS "
                        "$$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$ LANGUAGE plpgsql"
                    )
                )
                conn.execute(
                    text(
                        f'CREATE TRIGGER fail_{table} BEFORE INSERT ON "{table}" '
                        "FOR EACH ROW EXECUTE FUNCTION rt_fail()"
                    )
                )
            else:
                conn.execute(text(f'DROP TRIGGER fail_{table} ON "{table}"'))

    return switch


@pytest.fixture
def now() -> dt.datetime:
    return NOW


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20250314)


Snapshot = dict[str, list[tuple[Any, ...]]]


@pytest.fixture
def snapshot(engine: Engine) -> Callable[[], Snapshot]:
    """Every row of every table, to assert that a refused operation changed nothing."""

    def take() -> Snapshot:
        with engine.connect() as conn:
            return {
                t.name: sorted((tuple(r) for r in conn.execute(select(t))), key=lambda r: repr(r))
                for t in METADATA.sorted_tables
            }

    return take


@pytest.fixture
def student_id(engine: Engine) -> str:
    """A student with no records, "S000001" (María José Nuñez)."""
    return students.add_student(
        engine,
        {
            "local_id": "S000001",
            "ssid": "1234567890",
            "legal_first_name": "María",
            "legal_middle_name": "José",
            "legal_last_name": "Nuñez",
            "birth_date": "2010-05-17",
            "gender": "F",
            "school": REQUESTING_SCHOOL,
        },
        actor="registrar.a",
        now=NOW,
    )


def _records_request(**overrides: Any) -> peer_pb2.RecordsRequest:
    fields: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "requesting_district": REQUESTING_DISTRICT,
        "requesting_school": REQUESTING_SCHOOL,
        "prior_district": PRIOR_DISTRICT,
        "prior_school": PRIOR_SCHOOL,
        "student": peer_pb2.StudentIdentity(
            ssid="1234567890",
            legal_first_name="María",
            legal_middle_name="José",
            legal_last_name="Nuñez",
            birth_date="2010-05-17",
            gender="F",
        ),
        "tables": [common_pb2.TST, common_pb2.HIS],
        "nonce": b"\x01" * 16,
        "requested_by": "registrar.b",
    }
    fields.update(overrides)
    request = peer_pb2.RecordsRequest(**fields)
    request.created_at.FromDatetime(NOW - dt.timedelta(minutes=1))
    request.expires_at.FromDatetime(NOW + dt.timedelta(days=30))
    return request


@pytest.fixture
def records_request() -> Callable[..., peer_pb2.RecordsRequest]:
    """A factory of valid ``RecordsRequest`` messages (B=1964733 asks A=0161192)."""
    return _records_request


@pytest.fixture
def outbound(
    engine: Engine,
    student_id: str,
    records_request: Callable[..., peer_pb2.RecordsRequest],
    now: dt.datetime,
) -> str:
    """Our QUEUED request for ``student_id``'s records (B=1964733 asks A=0161192)."""
    request = records_request()
    requests.record_outbound_request(
        engine,
        request,
        b"signed-request",
        local_student_id=student_id,
        actor="registrar.b",
        now=now,
    )
    return request.request_id


@pytest.fixture
def inbound(
    engine: Engine, records_request: Callable[..., peer_pb2.RecordsRequest], now: dt.datetime
) -> str:
    """A PENDING request received from 1964733, undecided."""
    request = records_request()
    requests.record_inbound_request(engine, request, b"signed-request", now=now)
    return request.request_id
