"""Schema migrations of the district and registry databases, on SQLite and PostgreSQL.

- The migration scripts build exactly the schema the models describe (Alembic's
  own comparison finds no difference), from an empty database and from the
  first revision with data in it; nothing of the data is lost on the way.
- A database created before migrations existed is adopted.
- Servers and tools refuse a database they do not fit, and say what to run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from registry import cli as registry_cli
from registry import migrations as registry_migrations
from registry.home import init_home
from registry.store import RegistryStore
from registry.store import metadata as REGISTRY_METADATA
from rt_client import cli as rt_cli
from rt_client import merkle
from rt_client.config import write_config
from rt_client.errors import SchemaVersionError
from rt_server.core.validate import validate_row
from rt_server.server import DistrictServer
from rt_server.store import (
    METADATA,
    disclosures,
    importer,
    make_engine,
    migrations,
    students,
)
from rt_server.store.schema import (
    IMPORT_LEDGER,
    OUTBOX,
    RECORD_TABLES,
    REQUESTS,
    TRANSFER_CHUNKS,
    TRANSFERS,
)
from scripts import samples
from tests._databases import Databases
from tests.harness.world import stop_district_server

FIRST = "0001"
NOW = dt.datetime(2025, 3, 14, 15, 9, 26, tzinfo=dt.UTC)


def differences(engine: sa.Engine, metadata: sa.MetaData) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match the models."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def revision_of(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def everything(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, as the database holds it (reflected, any revision)."""
    reflected = sa.MetaData()
    reflected.reflect(engine)
    with engine.connect() as conn:
        return {
            name: sorted(
                (dict(r._mapping) for r in conn.execute(sa.select(table))),
                key=lambda row: repr(sorted(row.items(), key=lambda kv: kv[0])),
            )
            for name, table in reflected.tables.items()
            if name != "alembic_version"
        }


@pytest.fixture
def district_engine(databases: Databases) -> Any:
    engine = make_engine(databases.url("district"))
    yield engine
    engine.dispose()


# --- the scripts build the models' schema ---------------------------------------------------------


def test_an_empty_database_upgrades_to_the_newest_revision(
    databases: Databases, district_engine: sa.Engine
) -> None:
    assert migrations.HISTORY.state(district_engine).empty
    assert migrations.HISTORY.upgrade(district_engine) == (None, migrations.HISTORY.head)
    assert revision_of(district_engine) == migrations.HISTORY.head
    assert differences(district_engine, METADATA) == []
    # Again: nothing to do, nothing changed.
    head = migrations.HISTORY.head
    assert migrations.HISTORY.upgrade(district_engine) == (head, head)
    migrations.HISTORY.check_at_head(district_engine)

    registry_engine = sa.create_engine(databases.url("registry"))
    try:
        assert registry_migrations.HISTORY.upgrade(registry_engine) == (
            None,
            registry_migrations.HISTORY.head,
        )
        assert differences(registry_engine, REGISTRY_METADATA) == []
        registry_migrations.HISTORY.check_at_head(registry_engine)
    finally:
        registry_engine.dispose()


def _fill_first_revision(engine: sa.Engine) -> None:
    """Data of every kind a district holds, written to a database at the first revision."""
    rng = random.Random(7)
    student = samples.sample_student(rng, 1)
    local_id = students.add_student(
        engine, student, samples.sample_batches(rng), actor="registrar", now=NOW
    )
    common = {
        "other_district": "3768338",
        "requesting_district": "3768338",
        "requesting_school": "37683383732997",
        "prior_district": "1964733",
        "prior_school": "19647331932334",
        "tables_requested": "TST,HIS",
        "request_envelope": b"\x0a\x01signed",
        "created_at": NOW,
        "updated_at": NOW,
        "attempts": 0,
        "delivery_bytes_total": 0,
        "delivery_bytes_done": 0,
    }
    with engine.begin() as conn:
        conn.execute(
            sa.insert(REQUESTS),
            [
                {**common, "request_id": "r-in", "direction": "INBOUND", "status": "PENDING",
                 "local_student_id": local_id, "approved": True, "transfer_id": "t-out"},
                {**common, "request_id": "r-out", "direction": "OUTBOUND",
                 "status": "DATA_RECEIVED", "local_student_id": None, "approved": True,
                 "transfer_id": "t-in"},
            ],
        )  # fmt: skip
        transfer = {
            "header": b"header",
            "header_signature": b"sig",
            "wrapped_key": b"key",
            "ciphertext_bytes": 6,
            "received_offset": 6,
            "trailer_signature": b"trailer",
            "ciphertext_sha512": b"\x00" * 64,
            "table_counts": "TST=1",
            "created_at": NOW,
        }
        conn.execute(
            sa.insert(TRANSFERS),
            [
                {**transfer, "transfer_id": "t-out", "request_id": "r-in",
                 "direction": "OUTBOUND", "state": "SEALED", "completed_at": None},
                {**transfer, "transfer_id": "t-in", "request_id": "r-out",
                 "direction": "INBOUND", "state": "RECEIVED", "completed_at": NOW},
            ],
        )  # fmt: skip
        conn.execute(
            sa.insert(TRANSFER_CHUNKS),
            [
                {"transfer_id": "t-in", "seq": 0, "offset": 0, "data": b"abc"},
                {"transfer_id": "t-in", "seq": 1, "offset": 3, "data": b"def"},
            ],
        )
        conn.execute(
            sa.insert(OUTBOX).values(
                kind="delivery", request_id="r-in", to_district="3768338", payload=b"t-out",
                status="QUEUED", attempts=2, next_attempt_at=NOW, created_at=NOW,
            )
        )  # fmt: skip


def test_from_the_first_revision_to_the_newest_with_data_in_it(
    district_engine: sa.Engine,
) -> None:
    assert migrations.HISTORY.upgrade(district_engine, FIRST) == (None, FIRST)
    _fill_first_revision(district_engine)
    before = everything(district_engine)
    assert before["transfer_chunks"] and before["HIS"] and before["outbox"]

    assert migrations.HISTORY.upgrade(district_engine) == (FIRST, migrations.HISTORY.head)
    assert differences(district_engine, METADATA) == []
    after = everything(district_engine)
    # Every row is still there, every value unchanged; new columns and tables are empty.
    assert set(before) <= set(after)
    assert {name: rows for name, rows in after.items() if name not in before} == {
        "replaced_rows": [],
        "mail_outbox": [],
        "parent_notices": [],
        "school_calendars": [],
        "student_flags": [],
        "compliance_notices": [],
    }
    for name, rows in before.items():
        kept = [{k: row[k] for k in rows[0]} for row in after[name]] if rows else after[name]
        assert kept == rows, name
    assert {row["seal_attempt"] for row in after["transfers"]} == {None}

    with district_engine.begin() as conn:
        # What the new revision is for: an outbound transfer being sealed.
        conn.execute(
            sa.update(TRANSFERS)
            .where(TRANSFERS.c.transfer_id == "t-out")
            .values(state="SEALING", seal_attempt="a" * 36)
        )
    with pytest.raises(sa.exc.IntegrityError), district_engine.begin() as conn:
        conn.execute(sa.update(TRANSFERS).values(state="SHREDDED"))  # the check still holds
    with pytest.raises(sa.exc.IntegrityError), district_engine.begin() as conn:
        # ... and so do the foreign keys (SQLite's were off while tables were rebuilt).
        conn.execute(
            sa.insert(TRANSFER_CHUNKS).values(transfer_id="nope", seq=0, offset=0, data=b"x")
        )


def test_a_database_from_before_migrations_is_adopted(district_engine: sa.Engine) -> None:
    migrations.HISTORY.upgrade(district_engine, FIRST)
    _fill_first_revision(district_engine)
    with district_engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))  # as create_all left it
    before = everything(district_engine)

    state = migrations.HISTORY.state(district_engine)
    assert state.current is None and state.pre_migrations and not state.empty
    with pytest.raises(SchemaVersionError, match="from before schema migrations"):
        migrations.HISTORY.check_at_head(district_engine)
    assert migrations.HISTORY.upgrade(district_engine) == (None, migrations.HISTORY.head)
    assert differences(district_engine, METADATA) == []
    assert count(district_engine, RECORD_TABLES["HIS"]) == len(before["HIS"])
    assert count(district_engine, TRANSFER_CHUNKS) == 2


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _downgrade(engine: sa.Engine, target: str) -> None:
    with engine.connect() as conn, conn.begin():
        command.downgrade(migrations.HISTORY.config(conn), target)


def _ledger_rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    """(transfer, table, first row, rows, outcome, local SQ), at 0003 and later."""
    ledger = IMPORT_LEDGER.c
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(
                    ledger.transfer_id, ledger.table_code, ledger.row_index, ledger.row_count,
                    ledger.outcome, ledger.local_sq,
                ).order_by(ledger.transfer_id, ledger.table_code, ledger.row_index)
            )
        ]  # fmt: skip


def test_0003_turns_the_import_ledger_into_runs_and_back(district_engine: sa.Engine) -> None:
    """Entries from before 0003 are runs of one; a downgrade gives every row its entry again."""
    migrations.HISTORY.upgrade(district_engine, "0002")
    pid = students.add_student(
        district_engine, samples.sample_student(random.Random(3), 1), actor="registrar", now=NOW
    )
    his = [
        validate_row("HIS", {"YR": "2023-2024", "TE": "F", "CN": cn, "MK": "A"})
        for cn in ("1101", "1102", "3101", "3102", "3103")
    ]
    with district_engine.begin() as conn:
        conn.execute(
            sa.insert(RECORD_TABLES["HIS"]),
            [{**row, "PID": pid, "SQ": sq, "SRC": "SIS"} for sq, row in enumerate(his[:2], 1)],
        )
        # As 0002's code left an imported transfer: an entry per row, and the marker.
        old = "0" * 36
        conn.execute(
            sa.text(
                "INSERT INTO import_ledger (transfer_id, table_code, row_index, outcome, "
                "local_sq, imported_at) VALUES (:t, :c, :i, :o, :sq, :at)"
            ),
            [
                {"t": old, "c": c, "i": i, "o": o, "sq": sq, "at": NOW.replace(tzinfo=None)}
                for c, i, o, sq in [
                    ("*", -1, "TRANSFER", None),
                    ("HIS", 0, "IMPORTED", 1),
                    ("HIS", 1, "IMPORTED", 2),
                    ("HIS", 2, "SKIPPED_DUPLICATE", None),
                ]
            ],
        )

    migrations.HISTORY.upgrade(district_engine)
    assert _ledger_rows(district_engine) == [
        (old, "*", -1, 0, "TRANSFER", None),
        (old, "HIS", 0, 1, "IMPORTED", 1),
        (old, "HIS", 1, 1, "IMPORTED", 2),
        (old, "HIS", 2, 1, "SKIPPED_DUPLICATE", None),
    ]
    again = importer.import_transfer(district_engine, old, pid, [])
    assert again.already_imported
    assert (dict(again.imported), dict(again.skipped)) == ({"HIS": 2}, {"HIS": 1})

    # A transfer imported at 0003: two duplicates, then three new rows, two runs.
    new = "f" * 36
    first = importer.import_transfer(
        district_engine, new, pid, [("HIS", i, row) for i, row in enumerate(his)], now=NOW
    )
    assert _ledger_rows(district_engine)[4:] == [
        (new, "*", -1, 0, "TRANSFER", None),
        (new, "HIS", 0, 2, "SKIPPED_DUPLICATE", None),
        (new, "HIS", 2, 3, "IMPORTED", 3),
    ]

    _downgrade(district_engine, "0002")
    assert revision_of(district_engine) == "0002"
    entries = sorted(
        (r["transfer_id"], r["table_code"], r["row_index"], r["outcome"], r["local_sq"])
        for r in everything(district_engine)["import_ledger"]
    )
    assert entries[4:] == [
        (new, "*", -1, "TRANSFER", None),
        (new, "HIS", 0, "SKIPPED_DUPLICATE", None),
        (new, "HIS", 1, "SKIPPED_DUPLICATE", None),
        (new, "HIS", 2, "IMPORTED", 3),
        (new, "HIS", 3, "IMPORTED", 4),
        (new, "HIS", 4, "IMPORTED", 5),
    ]

    migrations.HISTORY.upgrade(district_engine)
    assert differences(district_engine, METADATA) == []
    for transfer, result in ((old, again), (new, first)):
        repeated = importer.import_transfer(district_engine, transfer, pid, [])
        assert repeated.already_imported
        assert (repeated.imported, repeated.skipped) == (result.imported, result.skipped)


def test_0004_disclosures_keep_their_tables_and_gain_row_counts(
    district_engine: sa.Engine,
) -> None:
    """An entry from before 0004 keeps its tables and has no counts; new ones have both."""
    migrations.HISTORY.upgrade(district_engine, "0003")
    pid = students.add_student(
        district_engine, samples.sample_student(random.Random(4), 1), actor="registrar", now=NOW
    )
    with district_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO disclosures (student_local_id, receiving_district, receiving_school, "
                "tables, disclosed_at, request_id, legal_basis, acting_staff) "
                "VALUES (:p, '3768338', '37683383732997', 'TST,HIS', :at, 'r-1', 'basis', 'alice')"
            ),
            {"p": pid, "at": NOW.replace(tzinfo=None)},
        )
    migrations.HISTORY.upgrade(district_engine)
    assert differences(district_engine, METADATA) == []
    disclosures.write_disclosure(
        district_engine,
        student_local_id=pid,
        receiving_district="3768338",
        receiving_school="37683383732997",
        counts={"HIS": 2},
        request_id="r-2",
        acting_staff="alice",
        now=NOW,
    )
    listed = disclosures.list_disclosures(district_engine, pid)
    assert [(x.tables, x.counts) for x in listed] == [
        (("TST", "HIS"), None),
        (("HIS",), (("HIS", 2),)),
    ]

    _downgrade(district_engine, "0003")
    kept = everything(district_engine)
    assert "replaced_rows" not in kept
    assert sorted(r["tables"] for r in kept["disclosures"]) == ["HIS", "TST,HIS"]
    assert all("table_counts" not in r for r in kept["disclosures"])
    migrations.HISTORY.upgrade(district_engine)
    assert differences(district_engine, METADATA) == []


def test_registry_0002_lifts_district_locks_and_keeps_failure_counts(databases: Databases) -> None:
    """0001 locked a district (``locked_until``); 0002 locks sources (``last_lockout_at``)."""
    engine = sa.create_engine(databases.url("registry"))
    try:
        assert registry_migrations.HISTORY.upgrade(engine, FIRST) == (None, FIRST)
        row = {
            "code": "1964733", "name": "LAUSD", "status": "pending", "endpoints": "[]",
            "auth_code_hash": "scrypt$16$8$1$c2FsdA==$aGFzaA==", "failed_attempts": 7,
            "locked_until": NOW, "created_at": NOW,
        }  # fmt: skip
        columns = ", ".join(row)
        values = ", ".join(f":{name}" for name in row)
        with engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO districts ({columns}) VALUES ({values})"), row)
        assert registry_migrations.HISTORY.upgrade(engine) == (
            FIRST,
            registry_migrations.HISTORY.head,
        )
        assert differences(engine, REGISTRY_METADATA) == []
        (after,) = everything(engine)["districts"]
        assert after["failed_attempts"] == 7 and after["last_lockout_at"] is None
        assert "locked_until" not in after
        assert {k: after[k] for k in ("code", "name", "auth_code_hash")} == {
            k: row[k] for k in ("code", "name", "auth_code_hash")
        }

        with engine.connect() as conn, conn.begin():
            command.downgrade(registry_migrations.HISTORY.config(conn), FIRST)
        (back,) = everything(engine)["districts"]
        assert back["failed_attempts"] == 7 and back["locked_until"] is None
        assert "last_lockout_at" not in back
    finally:
        engine.dispose()


def test_registry_0003_logs_the_entries_already_signed_oldest_first(databases: Databases) -> None:
    """0003 creates the directory log and backfills it: RFC 9162 leaf hashes, by issue time."""
    engine = sa.create_engine(databases.url("registry"))
    try:
        registry_migrations.HISTORY.upgrade(engine, "0002")
        district = {
            "code": "1964733", "name": "LAUSD", "status": "active", "endpoints": "[]",
            "failed_attempts": 0, "created_at": NOW,
        }  # fmt: skip
        entries = [
            ("1964733", 2, b"second", NOW + dt.timedelta(days=1)),
            ("1964733", 1, b"first", NOW),
        ]
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO districts (code, name, status, endpoints, failed_attempts, "
                    "created_at) VALUES (:code, :name, :status, :endpoints, :failed_attempts, "
                    ":created_at)"
                ),
                district,
            )
            for code, version, body, issued in entries:
                conn.execute(
                    sa.text(
                        "INSERT INTO entries (district_code, version, body, signature, status, "
                        "tls_spki_sha256, issued_at, expires_at) VALUES (:c, :v, :b, :s, "
                        "'active', :k, :i, :e)"
                    ),
                    {"c": code, "v": version, "b": body, "s": b"sig", "k": b"k" * 32, "i": issued,
                     "e": issued + dt.timedelta(days=30)},
                )  # fmt: skip
        registry_migrations.HISTORY.upgrade(engine)
        assert differences(engine, REGISTRY_METADATA) == []
        leaves = sorted(everything(engine)["log_leaves"], key=lambda r: r["leaf_index"])
        assert [(r["leaf_index"], r["version"]) for r in leaves] == [(0, 1), (1, 2)]
        assert [bytes(r["leaf_hash"]) for r in leaves] == [
            merkle.leaf_hash(b"first"),
            merkle.leaf_hash(b"second"),
        ]
        assert [(r["id"], r["tree_size"]) for r in everything(engine)["log_head"]] == [(1, 2)]
        # The one complete subtree above the leaves, from which proofs are made.
        (node,) = everything(engine)["log_nodes"]
        assert (node["level"], node["node_index"], bytes(node["node_hash"])) == (
            1,
            0,
            merkle.node_hash(merkle.leaf_hash(b"first"), merkle.leaf_hash(b"second")),
        )
        with engine.connect() as conn, conn.begin():
            command.downgrade(registry_migrations.HISTORY.config(conn), "0002")
        assert "log_leaves" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


# --- refusing what does not fit -------------------------------------------------------------------


def _set_revision(engine: sa.Engine, revision: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": revision})


def test_a_district_server_refuses_a_database_it_does_not_fit(
    databases: Databases, enrolled_district, tmp_path: Path, capsys
) -> None:
    district = enrolled_district("1964733")
    url = databases.url("refused")
    config = dataclasses.replace(district.config, database_url=url)
    config_file = tmp_path / "district.toml"
    write_config(config, config_file)
    engine = make_engine(url)
    try:
        if databases.postgres:
            # A fresh PostgreSQL database is never migrated by a server.
            with pytest.raises(SchemaVersionError, match="has no schema.*rt db upgrade"):
                DistrictServer(config).start()
            assert migrations.HISTORY.state(engine).empty
        migrations.HISTORY.upgrade(engine, FIRST)
        with pytest.raises(SchemaVersionError, match=f"at revision {FIRST} but .*rt db upgrade"):
            DistrictServer(config).start()

        assert rt_cli.main(["db", "status", "--config", str(config_file)]) == 0
        assert "run 'rt db upgrade'" in capsys.readouterr().out
        assert rt_cli.main(["db", "upgrade", "--config", str(config_file)]) == 0
        assert f"upgraded from {FIRST} to revision" in capsys.readouterr().out
        server = DistrictServer(config)
        server.start()  # now it fits
        stop_district_server(server, grace=0)

        _set_revision(engine, "ffffffffffff")  # as a newer version would leave it
        with pytest.raises(SchemaVersionError, match="newer version"):
            DistrictServer(config).start()
        assert rt_cli.main(["db", "upgrade", "--config", str(config_file)]) == 1
        assert "newer version" in capsys.readouterr().err
        assert revision_of(engine) == "ffffffffffff"  # the upgrade changed nothing
    finally:
        engine.dispose()


def test_a_fresh_sqlite_database_is_created_on_first_start(enrolled_district, databases) -> None:
    if databases.postgres:
        pytest.skip("only the embedded SQLite default is created by the server itself")
    district = enrolled_district("1964733")
    server = DistrictServer(district.config)
    server.start()
    try:
        assert server.district is not None
        assert revision_of(server.district.engine) == migrations.HISTORY.head
    finally:
        stop_district_server(server, grace=0)


def test_the_registry_refuses_a_database_it_does_not_fit(
    databases: Databases, tmp_path: Path, capsys
) -> None:
    url = databases.url("registry")
    home = tmp_path / "registry"
    init_home(home, database_url=url)  # init creates the schema, on either database
    engine = sa.create_engine(url)
    try:
        assert revision_of(engine) == registry_migrations.HISTORY.head
        assert registry_cli.main(["--home", str(home), "district", "list", "--json"]) == 0
        capsys.readouterr()

        _set_revision(engine, "ffffffffffff")
        assert registry_cli.main(["--home", str(home), "district", "list"]) == 1
        assert "newer version" in capsys.readouterr().err
        with pytest.raises(SchemaVersionError, match="newer version"):
            RegistryStore.open(url)

        # As the registry from before migrations left it: the first revision's tables, unstamped.
        _set_revision(engine, registry_migrations.HISTORY.head)
        with engine.connect() as conn, conn.begin():
            command.downgrade(registry_migrations.HISTORY.config(conn), FIRST)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE alembic_version"))
        assert registry_cli.main(["--home", str(home), "db", "status", "--json"]) == 0
        assert '"at_head": false' in capsys.readouterr().out
        assert registry_cli.main(["--home", str(home), "db", "upgrade"]) == 0
        assert "upgraded" in capsys.readouterr().out
        assert registry_cli.main(["--home", str(home), "db", "upgrade"]) == 0
        assert "already at the newest revision" in capsys.readouterr().out
        RegistryStore.open(url).close()
    finally:
        engine.dispose()


def test_an_unmigrated_postgres_registry_database_is_refused(databases: Databases) -> None:
    if not databases.postgres:
        pytest.skip("an empty SQLite file is created, as for a district")
    url = databases.url("registry")
    with pytest.raises(SchemaVersionError, match="has no schema.*rt-registry"):
        RegistryStore.open(url)


def test_rt_db_upgrade_moves_an_old_spool_file_into_the_database(
    databases: Databases, enrolled_district, tmp_path: Path, capsys
) -> None:
    """A transfer sealed by a version that spooled to files is delivered as it was sealed."""
    district = enrolled_district("1964733")
    url = databases.url("old")
    config = dataclasses.replace(district.config, database_url=url)
    config_file = tmp_path / "district.toml"
    write_config(config, config_file)
    engine = make_engine(url)
    try:
        migrations.HISTORY.upgrade(engine, FIRST)
        _fill_first_revision(engine)  # t-out: SEALED, 6 bytes, not yet delivered
        with engine.begin() as conn:
            conn.execute(sa.update(TRANSFERS).values(received_offset=0))  # as 0001 wrote it
        spool = config.data_dir / "spool"
        spool.mkdir(mode=0o700)
        (spool / "t-out.rtx").write_bytes(b"sealed")
        (spool / "unknown.rtx").write_bytes(b"whose?")  # no transfer waits for it: left alone
        (spool / "t-x.partial").write_bytes(b"half")  # an unfinished seal: gone

        assert rt_cli.main(["db", "upgrade", "--config", str(config_file)]) == 0
        assert "1 sealed transfer(s) moved" in capsys.readouterr().out
        with engine.connect() as conn:
            chunks = conn.execute(
                sa.select(TRANSFER_CHUNKS.c.data).where(TRANSFER_CHUNKS.c.transfer_id == "t-out")
            ).scalars()
            assert b"".join(bytes(c) for c in chunks) == b"sealed"
            offset = conn.execute(
                sa.select(TRANSFERS.c.received_offset).where(TRANSFERS.c.transfer_id == "t-out")
            ).scalar_one()
        assert offset == 6
        assert sorted(p.name for p in spool.iterdir()) == ["unknown.rtx"]
    finally:
        engine.dispose()
