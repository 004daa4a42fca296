"""The live SIS link: rows sent straight from the prior district's SIS database, imports
written back into the new district's, on SQLite and PostgreSQL SIS databases laid out as
Aeries lays them out; a SIS database that lacks a table or column stops ``rt serve``.

Real servers (tests/harness), real SIS databases (their own SQLite file or PostgreSQL
schema). District A holds the student's demographics in its own tables and *no* record
rows there: what B receives can only have come from A's SIS database.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select, text

from rt_client.errors import ConfigError
from rt_server.core.tables import ALL_TABLES, TABLES
from rt_server.server import DistrictServer
from rt_server.sis.cli_export import run_export
from rt_server.sis.live import sis_value
from rt_server.sis.load import load_export
from rt_server.store import make_engine, migrations
from rt_server.store.schema import RECORD_TABLES
from rt_server.store.sis_live import create_layout
from tests._databases import Databases
from tests.harness.flow import (
    BIRTH,
    FIRST,
    LAST,
    SSID,
    add_student,
    approve,
    create_request,
    import_,
    small_records,
)
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR, PRIOR_SCHOOL, Pair, Side, World


def _stu(engine: Engine, pid: str, school: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(_table(engine, "STU")),
            {
                "ID": pid,
                "SC": school,
                "LN": LAST,
                "FN": FIRST,
                "BD": dt.date.fromisoformat(BIRTH),
                "SX": "F",
                "GR": 9,
                "CID": SSID,
            },
        )


def _table(engine: Engine, code: str) -> Any:
    from sqlalchemy import MetaData, Table

    return Table(code, MetaData(), autoload_with=engine)


def _sis_rows(engine: Engine, code: str, pid: str) -> list[dict[str, Any]]:
    spec = TABLES[code]
    with engine.connect() as conn:
        table = _table(engine, code)
        found = conn.execute(select(table).where(table.c.PID == pid).order_by(table.c.SQ))
        return [
            {c.name: sis_value(c, row[c.name]) for c in spec.columns} for row in found.mappings()
        ]


def _data(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(v for k, v in sorted(row.items()) if k not in ("PID", "SQ", "SRC"))


def test_live_link_sends_from_the_sis_and_writes_back(
    harness: World, databases: Databases, tmp_path: Path
) -> None:
    sis_a, sis_b = databases.url("sis_a"), databases.url("sis_b")
    create_layout(sis_a)
    create_layout(sis_b)
    a_engine, b_engine = create_engine(sis_a), create_engine(sis_b)
    try:
        # A's SIS: the student and their rows (SQ as Aeries numbers them, SRC blank).
        _stu(a_engine, "A1", "101")
        records = small_records(7, n=3)
        with a_engine.begin() as conn:
            for code, rows in records.items():
                conn.execute(
                    insert(_table(a_engine, code)),
                    [{**r, "PID": "A1", "SQ": i + 1, "SRC": None} for i, r in enumerate(rows)],
                )
        # B's SIS: the student enrolled, one HIS row of its own already (SQ 1).
        _stu(b_engine, "B1", "202")
        own_his = {**records["HIS"][0], "YR": "2010-2011", "PID": "B1", "SQ": 1, "SRC": "AE"}
        with b_engine.begin() as conn:
            conn.execute(insert(_table(b_engine, "HIS")), own_his)

        prior = harness.enroll(
            PRIOR, "Prior Unified", [(PRIOR_SCHOOL, "Lincoln High")], sis_database_url=sis_a
        )
        new = harness.enroll(
            NEW,
            "New Unified",
            [(NEW_SCHOOL, "Roosevelt High")],
            sis_database_url=sis_b,
            sis_write_back=True,
        )
        p = Pair(Side(PRIOR, PRIOR_SCHOOL, prior), Side(NEW, NEW_SCHOOL, new))
        p.started = harness.started
        p.start(p.a)
        p.start(p.b)
        add_student(p.a, "A1")  # demographics only: no record rows in A's own tables
        add_student(p.b, "B1")
        request_id = create_request(p)
        approve(p, request_id, student="A1")
        result = import_(p, request_id)
        assert not result.already_imported

        for code in ALL_TABLES:
            written = [r for r in _sis_rows(b_engine, code, "B1") if r["SRC"] == "RT"]
            assert sorted(map(_data, written)) == sorted(
                _data({k: sis_value(TABLES[code].by_name[k], v) for k, v in r.items()})
                for r in records[code]
            ), code
            # Numbered after the student's rows, as Aeries numbers them.
            first = 2 if code == "HIS" else 1
            assert sorted(r["SQ"] for r in written) == list(range(first, first + len(written)))
        assert _sis_rows(b_engine, "HIS", "B1")[0]["SRC"] == "AE"  # B's own row untouched

        # Importing again writes nothing more into the SIS.
        before = {code: len(_sis_rows(b_engine, code, "B1")) for code in ALL_TABLES}
        assert import_(p, request_id).already_imported
        assert {code: len(_sis_rows(b_engine, code, "B1")) for code in ALL_TABLES} == before

        # The hand-back CSVs load into a fresh database exactly as the SIS holds the rows.
        out = tmp_path / "aeries"
        run_export(p.b.engine, fmt="aeries-csv", out=out, request=request_id)
        fresh = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
        migrations.HISTORY.upgrade(fresh)
        load_export(fresh, out, actor="it.admin")
        with fresh.connect() as conn:
            for code in ALL_TABLES:
                table = RECORD_TABLES[code]
                loaded = [
                    dict(r)
                    for r in conn.execute(
                        select(table).where(table.c.PID == "B1").order_by(table.c.SQ)
                    ).mappings()
                ]
                in_sis = [r for r in _sis_rows(b_engine, code, "B1") if r["SRC"] == "RT"]
                assert [{**r, "PID": "B1"} for r in in_sis] == [
                    {**r, "SQ": s["SQ"]} for r, s in zip(loaded, in_sis, strict=True)
                ], code
        fresh.dispose()
    finally:
        a_engine.dispose()
        b_engine.dispose()


def test_a_sis_database_missing_tables_or_columns_stops_the_server(
    harness: World, databases: Databases
) -> None:
    url = databases.url("sis_bad")
    create_layout(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text('DROP TABLE "PFT"'))
        conn.execute(text('ALTER TABLE "HIS" DROP COLUMN "CC"'))
        conn.execute(text('ALTER TABLE "HIS" DROP COLUMN "CH"'))
    engine.dispose()
    enrolled = harness.enroll(
        PRIOR, "Prior Unified", [(PRIOR_SCHOOL, "Lincoln High")], sis_database_url=url
    )
    server = DistrictServer(enrolled.config)
    with pytest.raises(ConfigError) as refused:
        server.start()
    message = str(refused.value)
    assert "table HIS lacks column(s) CC, CH" in message
    assert "table PFT is missing" in message
    assert "password" not in message.lower()
    assert not enrolled.config.registrar_socket.exists()  # it never listened


def test_a_student_missing_from_the_sis_is_not_imported(
    harness: World, databases: Databases
) -> None:
    """Write-back needs the student in the SIS's STU: else nothing is imported, and B is told."""
    import grpc

    from tests.harness.flow import Status, get

    sis_b = databases.url("sis_b")
    create_layout(sis_b)
    prior = harness.enroll(PRIOR, "Prior Unified", [(PRIOR_SCHOOL, "Lincoln High")])
    new = harness.enroll(
        NEW,
        "New Unified",
        [(NEW_SCHOOL, "Roosevelt High")],
        sis_database_url=sis_b,
        sis_write_back=True,
    )
    p = Pair(Side(PRIOR, PRIOR_SCHOOL, prior), Side(NEW, NEW_SCHOOL, new))
    p.started = harness.started
    p.start(p.a)
    p.start(p.b)
    add_student(p.a, "A1", small_records(3, n=2))
    add_student(p.b, "B1")  # enrolled here, not in the SIS
    request_id = create_request(p)
    approve(p, request_id, student="A1")
    with pytest.raises(grpc.RpcError) as refused:
        import_(p, request_id)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not in the SIS's STU table" in (refused.value.details() or "")
    assert get(p.b, request_id).summary.status == Status.DATA_RECEIVED
    with p.b.engine.connect() as conn:
        for code in ALL_TABLES:
            table = RECORD_TABLES[code]
            assert conn.execute(select(table).where(table.c.PID == "B1")).first() is None
    engine = create_engine(sis_b)
    try:
        assert all(not _sis_rows(engine, code, "B1") for code in ALL_TABLES)
    finally:
        engine.dispose()
