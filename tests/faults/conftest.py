"""Fault tests: district servers as real subprocesses, killed, cut off and restarted.

The registry runs in this process (the ``registry`` fixture of the integration
tests, with its movable clock). Each district is enrolled through the real
``Enroll`` RPC and then runs as its own ``rt serve --config`` process, so a test
can SIGKILL or SIGTERM it at any moment and start it again on the same data
directory. The test-only knobs of ``rt_server._testhooks`` slow a sender
between frames or pause a server at a named point, so that "mid-stream" or
"after the records arrived, before the receipt was recorded" is a moment a
test waits for, not a race it hopes to win. Every wait polls with a deadline.

Tests talk to a district as its registrar does (the ``Registrar`` service on
its Unix socket) and read its SQLite database directly, read-only, to check
what was and was not written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from protos.rt.v1 import common_pb2, registrar_pb2, registrar_pb2_grpc
from rt_client.config import DistrictConfig, write_config
from rt_server.core.tables import ALL_TABLES
from rt_server.store import READ_ONLY, students
from rt_server.store.engine import make_engine
from rt_server.store.schema import RECORD_TABLES, create_schema
from scripts import samples
from tests._databases import Databases
from tests.integration.conftest import RegistryHandle, enroll, start_registry

T = TypeVar("T")

PRIOR, PRIOR_SCHOOL = "1964733", "19647331932334"
NEW, NEW_SCHOOL = "3768338", "37683383732997"
RPC_TIMEOUT = 30.0
STARTUP_TIMEOUT = 30.0
WAIT_TIMEOUT = 60.0
BOOKKEEPING = {"PID", "SQ", "SRC"}

# Every district in these tests retries fast and gives up a dead replica's
# work quickly; the tests that need other values say so.
FAST_CONFIG: dict[str, Any] = {
    "retry_base_seconds": 0.2,
    "retry_max_seconds": 1.0,
    "delivery_lease_seconds": 3.0,
    "rpc_timeout_seconds": 10.0,
    "shutdown_grace_seconds": 2.0,
}

Status = common_pb2.RequestStatus


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT_TIMEOUT) -> T:
    """Poll ``probe`` until it returns something other than None/False; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def _rt_command() -> list[str]:
    script = Path(sys.executable).parent / "rt"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from rt_client.cli import main; raise SystemExit(main())"]


class DistrictProcess:
    """One district: enrolled, its config on disk; ``start()`` runs ``rt serve`` for it."""

    def __init__(self, config: DistrictConfig, config_path: Path, school: str) -> None:
        self.config = config
        self.config_path = config_path
        self.code = config.district_code
        self.school = school
        self.log_path = config.data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._channel: grpc.Channel | None = None
        self._stub: registrar_pb2_grpc.RegistrarStub | None = None
        self._engine: Engine | None = None

    # --- configuration ---------------------------------------------------------

    def reconfigure(self, **fields: Any) -> None:
        """Change settings for the next start (the config file is rewritten)."""
        self.config = dataclasses.replace(self.config, **fields)
        write_config(self.config, self.config_path)

    # --- the process -------------------------------------------------------------

    def start(self, env: Mapping[str, str] | None = None, wait: bool = True) -> DistrictProcess:
        assert not self.running, f"district {self.code} is already running"
        self.starts += 1
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for name in ("RT_TEST_FRAME_DELAY_MS", "RT_TEST_PAUSE_AT"):
            if name not in (env or {}):
                full_env.pop(name, None)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} {dict(env or {})} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [*_rt_command(), "serve", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        def serving() -> bool:
            if not self.running:
                raise AssertionError(
                    f"district {self.code} exited while starting:\n{self.log_tail()}"
                )
            channel = grpc.insecure_channel(f"unix:{self.config.registrar_socket}")
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1.0
                )
                return reply.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                return False
            finally:
                channel.close()

        wait_for(f"district {self.code} to serve", serving, timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._drop_channel()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, as an init system stops it; returns the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._drop_channel()

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._drop_channel()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _drop_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None

    # --- its log -------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, text: str, timeout: float = WAIT_TIMEOUT, after: int = 0) -> int:
        """Wait for ``text`` in the log after character ``after``; returns its position."""

        def found() -> int | None:
            at = self.log().find(text, after)
            return at if at >= 0 else None

        return wait_for(f"{text!r} in district {self.code}'s log", found, timeout)

    # --- as its registrar ----------------------------------------------------------

    @property
    def rpc(self) -> registrar_pb2_grpc.RegistrarStub:
        if self._stub is None:
            self._channel = grpc.insecure_channel(f"unix:{self.config.registrar_socket}")
            self._stub = registrar_pb2_grpc.RegistrarStub(self._channel)
        return self._stub

    def call(self, method: str, request: Any) -> Any:
        return getattr(self.rpc, method)(request, timeout=RPC_TIMEOUT)

    def status(self, request_id: str) -> int:
        detail = self.call("GetRequest", registrar_pb2.RequestRef(request_id=request_id))
        return int(detail.summary.status)

    def wait_status(self, request_id: str, wanted: int, timeout: float = WAIT_TIMEOUT) -> None:
        seen: list[str] = []

        def reached() -> bool:
            try:
                status = self.status(request_id)
            except grpc.RpcError as exc:  # not there yet
                seen[:] = [exc.code().name]
                return False
            seen[:] = [Status.Name(status)]
            return status == wanted

        try:
            wait_for(f"request to be {Status.Name(wanted)} at {self.code}", reached, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc} (last: {seen}); log:\n{self.log_tail()}") from None

    # --- its database, read-only ---------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.config.database_url)
        return self._engine

    def rows(self, query: Any) -> list[Any]:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            return list(conn.execute(query).all())

    def scalar(self, query: Any) -> Any:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            return conn.execute(query).scalar()

    def record_rows(self, pid: str) -> dict[str, list[tuple[tuple[str, Any], ...]]]:
        """Every record row the district holds for ``pid``, per table, without PID/SQ/SRC."""
        out: dict[str, list[tuple[tuple[str, Any], ...]]] = {}
        for code in ALL_TABLES:
            table = RECORD_TABLES[code]
            out[code] = sorted(
                tuple(sorted((k, v) for k, v in row._mapping.items() if k not in BOOKKEEPING))
                for row in self.rows(select(table).where(table.c.PID == pid))
            )
        return out


class Cluster:
    """The registry (in-process) and the districts of one test, stopped at teardown.

    With ``databases`` on PostgreSQL each district gets a database of its own
    there; otherwise each has the default SQLite file in its data directory.
    """

    def __init__(
        self, registry: RegistryHandle, root: Path, databases: Databases | None = None
    ) -> None:
        self.registry = registry
        self.root = root
        self.databases = databases
        self.districts: list[DistrictProcess] = []

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
        if self.databases is not None and "database_url" not in config_fields:
            url = self.databases.district_url(f"district_{code}")
            if url is not None:
                config_fields["database_url"] = url
        enrolled = enroll(
            self.registry,
            self.root,
            code,
            f"District {code}",
            [(school, f"School {school}")],
            endpoints=[endpoint] if endpoint else None,
            peer_listen=peer_listen,
            **{**FAST_CONFIG, **config_fields},
        )
        config = enrolled.config
        data_dir = config.data_dir
        district = DistrictProcess(config, data_dir / "district.toml", school)
        self.districts.append(district)
        return district

    def stop_all(self) -> None:
        for district in reversed(self.districts):
            district.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A registry and districts on SQLite."""
    registry = start_registry(tmp_path / "registry")
    c = Cluster(registry, tmp_path)
    try:
        yield c
    finally:
        c.stop_all()
        registry.stop()


@pytest.fixture
def cluster_on_each_database(databases: Databases, tmp_path: Path) -> Iterator[Cluster]:
    """``cluster``, once with the districts on SQLite and once on PostgreSQL."""
    registry = start_registry(tmp_path / "registry")
    c = Cluster(registry, tmp_path, databases)
    try:
        yield c
    finally:
        c.stop_all()
        registry.stop()


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
        [*_rt_command(), *args, "--config", str(district.config_path), "--as", "registrar"],
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
