"""Real servers on loopback for the benchmark: a registry and two districts, as in the demo.

The registry (``rt-registry serve``) and both districts (``rt serve``) run as
subprocesses, so their memory can be read from ``/proc`` and nothing of the
benchmark's own Python shares their interpreter. Districts are enrolled once
through ``rt enroll``; before each measured run a district's database is
replaced with a copy of a seeded template and its server is started afresh.

Seeding writes straight into the district's SQLite file before its server
starts (students through ``students.add_student``, record rows by bulk insert
through SQLAlchemy Core): that is set-up, not what is measured.

The flow is driven through each district's ``Registrar`` service over its
Unix socket (Python stubs, one channel per district, as the ``rt`` CLI does),
and statuses are observed by reading the districts' databases directly, which
costs the servers nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from scripts import loopback
from scripts.loopback import ServerProcess, free_port, health_ok

T = TypeVar("T")

READY_TIMEOUT = 30.0

PRIOR_CODE, PRIOR_SCHOOL = "1964733", "19647331932334"
NEW_CODE, NEW_SCHOOL = "3768338", "37683383732997"
ACTOR = "bench"


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    """``loopback.wait_for``, failing with BenchError."""
    return loopback.wait_for(what, probe, timeout, interval=interval, error=BenchError)


# --- processes ----------------------------------------------------------------


class Proc(ServerProcess):
    """A server subprocess, its log, and its memory as the kernel reports it."""

    def _status_kb(self, key: str) -> int:
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def rss_mb(self) -> float:
        return self._status_kb("VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        """VmHWM: the highest resident set size since the process started."""
        return self._status_kb("VmHWM") / 1024


class RssSampler:
    """Polls VmRSS of some processes every ``interval`` seconds, in a thread (the peak as seen)."""

    def __init__(self, procs: dict[str, Proc], interval: float = 0.05) -> None:
        self._procs = procs
        self._interval = interval
        self.peak_mb: dict[str, float] = dict.fromkeys(procs, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for name, proc in self._procs.items():
                self.peak_mb[name] = max(self.peak_mb[name], proc.rss_mb())


# --- the cluster ----------------------------------------------------------------


@dataclass
class District:
    code: str
    school: str
    data_dir: Path
    endpoint: str
    proc: Proc | None = None
    database_url: str | None = None  # on PostgreSQL (None: the SQLite file ``db``)
    _channel: Any = None
    _stub: Any = None

    @property
    def config(self) -> Path:
        return self.data_dir / "district.toml"

    @property
    def db(self) -> Path:
        return self.data_dir / "district.db"

    @property
    def observed(self) -> Path | str:
        """What ``Observer`` reads: the database URL on PostgreSQL, else the SQLite file."""
        return self.database_url or self.db

    @property
    def socket(self) -> Path:
        return self.data_dir / "registrar.sock"

    @property
    def stub(self) -> Any:
        """The ``Registrar`` stub over the district's Unix socket (one channel, re-used)."""
        if self._stub is None:
            import grpc

            from protos.rt.v1 import registrar_pb2_grpc

            self._channel = grpc.insecure_channel(f"unix:{self.socket}")
            self._stub = registrar_pb2_grpc.RegistrarStub(self._channel)
        return self._stub

    def close_stub(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None


@dataclass
class Cluster:
    """Where everything lives and what runs; ``close()`` stops every process it started."""

    work: Path
    env: dict[str, str]
    bin_dir: Path
    procs: list[Proc] = field(default_factory=list)
    registry: Proc | None = None
    prior: District | None = None
    new: District | None = None
    # Called with each district server just started (the profiler attaches here).
    on_serve: Callable[[District, Proc], None] | None = None
    # The districts' databases on PostgreSQL instead of SQLite (``use_postgres``).
    postgres: Any = None

    @classmethod
    def create(cls, work: Path) -> Cluster:
        return cls(work=work, env=loopback.tool_env(), bin_dir=Path(sys.executable).parent)

    def tool(self, name: str) -> str:
        found = loopback.find_tool(name)
        if found is None:
            raise BenchError(f"cannot find `{name}`; run `make install` first")
        return found

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            argv, capture_output=True, text=True, env={**self.env, **(env or {})},
            cwd=self.work, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()}")
        return done.stdout

    def spawn(self, name: str, argv: list[str]) -> Proc:
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        started = loopback.spawn(name, argv, logs / f"{name}.log", env=self.env, cwd=self.work)
        proc = Proc(started.name, started.popen, started.log)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        """Registry up, both districts enrolled (their servers not started yet)."""
        home = self.work / "registry"
        address = f"127.0.0.1:{free_port()}"
        enroll_address = f"127.0.0.1:{free_port()}"
        rtr = self.tool("rt-registry")
        self.run([rtr, "init", str(home), "--listen", address, "--enroll-listen", enroll_address])
        info = json.loads(self.run([rtr, "info", "--home", str(home), "--json"]))
        codes = {}
        for code, name, school in (
            (PRIOR_CODE, "Prior Valley Unified", PRIOR_SCHOOL),
            (NEW_CODE, "New Harbor Unified", NEW_SCHOOL),
        ):
            out = self.run([
                rtr, "district", "add", "--home", str(home), "--code", code, "--name", name,
                "--school", f"{school}:School {school}", "--json",
            ])  # fmt: skip
            codes[code] = json.loads(out)["authorization_code"]
        self.registry = self.spawn("registry", [rtr, "serve", "--home", str(home)])
        ca = Path(info["ca_certificate"])
        if not ca.is_absolute():
            ca = self.work / ca  # relative to the directory the tool ran in
        wait_for(
            "the registry's enrollment port", lambda: _port_open(enroll_address), READY_TIMEOUT
        )
        districts = []
        for code, school in ((PRIOR_CODE, PRIOR_SCHOOL), (NEW_CODE, NEW_SCHOOL)):
            data_dir = self.work / f"d{code}"
            endpoint = f"127.0.0.1:{free_port()}"
            self.run(
                [
                    self.tool("rt"), "enroll", "--code", code, "--registry", address,
                    "--registry-enroll", enroll_address, "--registry-ca", str(ca),
                    "--registry-key", info["signing_key"], "--endpoint", endpoint,
                    "--data-dir", str(data_dir),
                ],
                env={"RT_AUTH_CODE": codes[code]},
            )  # fmt: skip
            districts.append(District(code, school, data_dir, endpoint))
        self.prior, self.new = districts

    def serve(self, district: District, database: Path | None) -> Proc:
        """(Re)start ``district``'s server, on a fresh copy of ``database`` if given."""
        self.stop_district(district)
        if database is not None and self.postgres is not None:
            url = self.postgres.restore(f"bench_{district.code}", database)
            if district.database_url != url:
                _add_settings(district.config, {"database_url": url})
                district.database_url = url
        elif database is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{district.db}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(database, district.db)
            shutil.rmtree(district.data_dir / "spool", ignore_errors=True)
        proc = self.spawn(
            f"district-{district.code}",
            [self.tool("rt"), "serve", "--config", str(district.config)],
        )
        district.proc = proc

        def ready() -> bool | None:
            if not proc.alive():
                raise BenchError(f"district {district.code} exited:\n{proc.tail()}")
            ok = district.socket.exists() and health_ok(f"unix:{district.socket}")
            return True if ok else None

        wait_for(f"district {district.code} to serve", ready, READY_TIMEOUT)
        if self.on_serve is not None:
            self.on_serve(district, proc)
        return proc

    def use_postgres(self, postgres: Any) -> None:
        """From the next ``serve`` on, districts run on ``postgres`` (None: SQLite)."""
        self.postgres = postgres
        for district in (self.prior, self.new):
            if district is not None and postgres is None and district.database_url:
                _remove_setting(district.config, "database_url")
                district.database_url = None

    def stop_district(self, district: District) -> None:
        district.close_stub()
        if district.proc is not None:
            district.proc.stop()
            district.proc = None

    def close(self) -> None:
        for d in (self.prior, self.new):
            if d is not None:
                d.close_stub()
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def _port_open(address: str) -> bool | None:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return None


# --- observing a district's database --------------------------------------------------


class Observer:
    """Reads a district's database directly (autocommit reads; WAL never blocks them).

    ``db``: a SQLite file, or a PostgreSQL URL (``postgresql+psycopg://...``).
    """

    def __init__(self, db: Path | str) -> None:
        self._pg = isinstance(db, str)
        self._conn: Any
        if isinstance(db, str):
            import psycopg
            import sqlalchemy as sa

            url = sa.engine.make_url(db).set(drivername="postgresql")
            self._conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
        else:
            self._conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout=30000")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._pg:
                return list(self._conn.execute(sql.replace("?", "%s"), args).fetchall())
            return list(self._conn.execute(sql, args).fetchall())

    def status(self, request_id: str) -> str | None:
        rows = self.query("SELECT status FROM requests WHERE request_id = ?", request_id)
        return rows[0][0] if rows else None

    def wait_status(
        self,
        request_id: str,
        wanted: str,
        timeout: float,
        interval: float = 0.0005,
        *,
        by_ssid: bool = False,
    ) -> float:
        """Poll until the request has ``wanted``; returns ``time.perf_counter()`` when seen.

        ``by_ssid``: ``request_id`` is the student's SSID instead (an inbound request
        whose id the caller does not know yet).
        """
        deadline = time.monotonic() + timeout
        while True:
            if by_ssid:
                rows = self.query(
                    "SELECT status FROM requests WHERE direction = 'INBOUND' AND ssid = ?",
                    request_id,
                )
                status = rows[0][0] if rows else None
            else:
                status = self.status(request_id)
            if status == wanted:
                return time.perf_counter()
            if status in ("FAILED", "REJECTED", "EXPIRED"):
                raise BenchError(f"request {request_id} became {status}")
            if time.monotonic() > deadline:
                raise BenchError(
                    f"request {request_id} is {status}, not {wanted}, after {timeout} s"
                )
            time.sleep(interval)

    def count_rows(self, pid: str | None = None) -> int:
        from rt_server.store.schema import RECORD_TABLES

        total = 0
        for code in RECORD_TABLES:
            if pid is None:
                total += self.query(f'SELECT count(*) FROM "{code}"')[0][0]  # noqa: S608
            else:
                total += self.query(f'SELECT count(*) FROM "{code}" WHERE "PID" = ?', pid)[0][0]  # noqa: S608
        return total


# --- seeding ----------------------------------------------------------------


@dataclass(frozen=True)
class Student:
    """One student as both districts know them (same identity, different local ids)."""

    prior_id: str
    new_id: str
    ssid: str
    rows: int


def _student_values(s: dict[str, Any], local_id: str, school: str) -> dict[str, Any]:
    return {**s, "local_id": local_id, "school": school}


def seed_templates(
    templates: Path, name: str, students: int, rows_per_student: int | None, seed: int = 2024
) -> tuple[Path, Path, list[Student]]:
    """Template databases for both districts: A holds ``students`` with records, B the same
    students enrolled without records. ``rows_per_student`` None: the realistic ~300 rows
    (``samples.DEFAULT_ROWS_PER_TABLE``); a number: that many rows for one student, made of
    whole realistic 300-row blocks (a consolidation: many years and schools in one record)."""
    from sqlalchemy import insert

    from rt_server.store import students as student_store
    from rt_server.store.engine import make_engine
    from rt_server.store.schema import RECORD_TABLES, create_schema
    from scripts import samples

    templates.mkdir(parents=True, exist_ok=True)
    prior_db, new_db = templates / f"{name}-prior.db", templates / f"{name}-new.db"
    meta = templates / f"{name}.json"
    if prior_db.exists() and new_db.exists() and meta.exists():
        return prior_db, new_db, [Student(**s) for s in json.loads(meta.read_text())]
    for path in (prior_db, new_db):
        path.unlink(missing_ok=True)
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    prior = make_engine(f"sqlite:///{prior_db}")
    new = make_engine(f"sqlite:///{new_db}")
    create_schema(prior)
    create_schema(new)
    out: list[Student] = []
    try:
        for i in range(1, students + 1):
            s = samples.sample_student(rng, i)
            prior_id, new_id = f"A{i:07d}", f"B{i:07d}"
            student_store.add_student(
                prior, _student_values(s, prior_id, PRIOR_SCHOOL), actor=ACTOR, now=now
            )
            student_store.add_student(
                new, _student_values(s, new_id, NEW_SCHOOL), actor=ACTOR, now=now
            )
            count = 0
            with prior.begin() as conn:
                for code, rows in _student_rows(rng, s["birth_date"], rows_per_student):
                    for row in rows:
                        row["PID"] = prior_id
                        row["SRC"] = "SIS"
                    conn.execute(insert(RECORD_TABLES[code]), rows)
                    count += len(rows)
            out.append(Student(prior_id, new_id, s["ssid"], count))
    finally:
        prior.dispose()
        new.dispose()
    for path in (prior_db, new_db):
        _checkpoint(path)
    meta.write_text(json.dumps([s.__dict__ for s in out]))
    return prior_db, new_db, out


def _student_rows(
    rng: random.Random, birth: dt.date, rows: int | None
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(table, rows) chunks for one student: one realistic record, or ``rows`` of them in blocks."""
    from scripts import samples

    if rows is None:
        yield from samples.sample_records(rng, birth_date=birth).items()
        return
    block = sum(samples.DEFAULT_ROWS_PER_TABLE.values())
    sq: dict[str, int] = {}
    left = rows
    while left > 0:
        counts = dict(samples.DEFAULT_ROWS_PER_TABLE)
        if left < block:  # the last block: scale every table down
            counts = {k: max(1, v * left // block) for k, v in counts.items()}
            extra = left - sum(counts.values())
            counts["TST"] += extra
        for code, chunk in samples.sample_records(rng, counts, birth_date=birth).items():
            for row in chunk:
                sq[code] = row["SQ"] = sq.get(code, 0) + 1
            left -= len(chunk)
            yield code, chunk


def _checkpoint(path: Path) -> None:
    """Fold the WAL into the file, so one file is the whole template."""
    conn = sqlite3.connect(str(path))
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _add_settings(config: Path, settings: dict[str, Any]) -> None:
    """Set top-level keys of a district.toml (e.g. ``database_url``)."""
    import tomllib

    import tomli_w

    table = tomllib.loads(config.read_text())
    table.update(settings)
    config.write_text(tomli_w.dumps(table))


def _remove_setting(config: Path, key: str) -> None:
    import tomllib

    import tomli_w

    table = tomllib.loads(config.read_text())
    table.pop(key, None)
    config.write_text(tomli_w.dumps(table))
