"""Fault tests: district servers as real subprocesses, killed, cut off and restarted.

Thin fixtures over the one test world (``tests.harness``). The registry runs
in this process, with its movable clock. Each district is enrolled through the
real ``Enroll`` RPC and then runs as its own ``rt serve --config`` process
(``tests.harness.processes.DistrictProcess``), so a test can SIGKILL or
SIGTERM it at any moment and start it again on the same data directory. The
test-only knobs of ``rt_server._testhooks`` slow a sender between frames or
pause a server at a named point, so that "mid-stream" or "after the records
arrived, before the receipt was recorded" is a moment a test waits for, not a
race it hopes to win. Every wait polls with a deadline.

Tests talk to a district as its registrar does (the ``Registrar`` service on
its Unix socket) and read its SQLite database directly, read-only, to check
what was and was not written.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from protos.rt.v1 import common_pb2, registrar_pb2
from rt_server.core.tables import ALL_TABLES
from rt_server.store import students
from rt_server.store.engine import make_engine
from rt_server.store.schema import RECORD_TABLES, create_schema
from scripts import samples
from tests._databases import Databases
from tests.harness import wait_for
from tests.harness.processes import DistrictProcess, Status, rt_command
from tests.harness.world import World

# Every district in these tests retries fast and gives up a dead replica's
# work quickly; the tests that need other values say so.
FAST_CONFIG: dict[str, Any] = {
    "retry_base_seconds": 0.2,
    "retry_max_seconds": 1.0,
    "delivery_lease_seconds": 3.0,
    "rpc_timeout_seconds": 10.0,
    "shutdown_grace_seconds": 2.0,
}


class Cluster(World):
    """The registry (in-process) and the districts of one test, stopped at teardown.

    With ``databases`` on PostgreSQL each district gets a database of its own
    there; otherwise each has the default SQLite file in its data directory.
    """

    @property
    def districts(self) -> list[DistrictProcess]:
        return self.processes

    def district(
        self,
        code: str,
        school: str,
        *,
        endpoint: str | None = None,
        peer_listen: str | None = None,
        **config_fields: Any,
    ) -> DistrictProcess:
        """Register and enroll a district (not started). ``config_fields`` override FAST_CONFIG."""
        return self.process(
            code,
            school,
            endpoint=endpoint,
            peer_listen=peer_listen,
            **{**FAST_CONFIG, **config_fields},
        )

    def stop_all(self) -> None:
        for district in reversed(self.processes):
            district.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A registry and districts on SQLite."""
    c = Cluster.start(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def cluster_on_each_database(databases: Databases, tmp_path: Path) -> Iterator[Cluster]:
    """``cluster``, once with the districts on SQLite and once on PostgreSQL."""
    c = Cluster.start(tmp_path, databases)
    try:
        yield c
    finally:
        c.close()


# --- students, records, the flow -------------------------------------------------------


def seed_student(
    district: DistrictProcess,
    local_id: str,
    *,
    ssid: str,
    records: Mapping[str, Sequence[Mapping[str, Any]]] = {},  # noqa: B006 - read only
    birth: dt.date = dt.date(2011, 4, 2),
) -> int:
    """Enroll a student with records straight into a stopped district's database.

    Bulk inserts (the records are the district's own, not a peer's: this is
    how a SIS load would put them there). Returns the number of rows.
    """
    assert not district.running
    engine = make_engine(district.config.database_url)
    try:
        create_schema(engine)
        students.add_student(
            engine,
            {
                "local_id": local_id,
                "ssid": ssid,
                "legal_first_name": "Ana",
                "legal_last_name": f"Nuñez-{local_id}",
                "birth_date": birth,
                "gender": "F",
                "school": district.school,
            },
            actor="seed",
        )
        total = 0
        with engine.begin() as conn:
            for code, rows in records.items():
                if rows:
                    conn.execute(
                        insert(RECORD_TABLES[code]),
                        [
                            {**r, "PID": local_id, "SQ": i, "SRC": "SIS"}
                            for i, r in enumerate(rows, 1)
                        ],
                    )
                    total += len(rows)
        return total
    finally:
        engine.dispose()


def small_records(seed: int, rows: int = 3) -> dict[str, list[dict[str, Any]]]:
    """A few realistic rows in every one of the eight tables."""
    import random

    records = samples.sample_records(random.Random(seed), {code: rows for code in ALL_TABLES})
    return {
        code: [{k: v for k, v in r.items() if k != "SQ"} for r in rs]
        for code, rs in records.items()
    }


def large_records(rows: int, seed: int = 1) -> dict[str, list[dict[str, Any]]]:
    """``rows`` course-history rows (distinct natural keys) plus a few in every other table.

    About 120 bytes of ciphertext per row: 40 000 rows make a transfer of
    about five ~1 MiB delivery frames (4.8 MB).
    """
    records = small_records(seed)
    template = records["HIS"][0]
    records["HIS"] = [
        {**template, "CN": f"C{i:07d}", "CO": f"Course number {i} of the catalog"}
        for i in range(rows)
    ]
    return records


def add_new_student(district: DistrictProcess, local_id: str, ssid: str) -> None:
    district.call(
        "AddStudent",
        registrar_pb2.AddStudentRequest(
            student=registrar_pb2.Student(
                local_id=local_id,
                ssid=ssid,
                legal_first_name="Ana",
                legal_last_name=f"Nuñez-{local_id}",
                birth_date="2011-04-02",
                gender="F",
                school=district.school,
            ),
            actor="registrar-b",
        ),
    )


def create_request(new: DistrictProcess, local_id: str, prior_school: str) -> str:
    detail = new.call(
        "CreateRequest",
        registrar_pb2.CreateRequestRequest(
            student_local_id=local_id, prior_school=prior_school, actor="registrar-b"
        ),
    )
    return str(detail.summary.request_id)


def approve(prior: DistrictProcess, request_id: str, local_id: str) -> str:
    detail = prior.call(
        "ApproveRequest",
        registrar_pb2.ApproveRequestRequest(
            request_id=request_id, student_local_id=local_id, actor="registrar-a"
        ),
    )
    return str(detail.transfer_id)


def import_records(new: DistrictProcess, request_id: str) -> registrar_pb2.ImportResult:
    return new.call(
        "ImportTransfer",
        registrar_pb2.ImportTransferRequest(request_id=request_id, actor="registrar-b"),
    )


def counts(items: Sequence[common_pb2.TableCount]) -> dict[str, int]:
    return {common_pb2.TableCode.Name(c.table): c.rows for c in items if c.rows}


def rt(district: DistrictProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The registrar's own tool: ``rt ARGS --config <district's config>``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RT_")}
    return subprocess.run(
        [*rt_command(), *args, "--config", str(district.config_path), "--as", "registrar"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "COLUMNS": "200"},
    )


def rt_json(district: DistrictProcess, *args: str) -> Any:
    import json

    done = rt(district, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def retry_until(district: DistrictProcess, request_id: str, wanted: int, times: int = 5) -> None:
    """``rt retry`` a FAILED request until it reaches ``wanted``.

    With the seconds-long horizons of these tests, a retry can run out again
    while gRPC is still waiting to reconnect to a district that just came back
    (its reconnect backoff, up to 10 s): the registrar then simply retries again.
    """
    failed = Status.Value("FAILED")
    for _ in range(times):
        done = rt(district, "retry", request_id)
        assert done.returncode == 0, done.stderr

        def settled() -> int | None:
            status = district.status(request_id)
            return status if status in (wanted, failed) else None

        if wait_for(f"request {request_id} to be {Status.Name(wanted)}", settled) == wanted:
            return
    raise AssertionError(f"request {request_id} failed {times} retries:\n{district.log_tail()}")
