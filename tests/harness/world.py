"""A real registry and real enrolled districts over real TLS, in this process or as subprocesses.

Everything is made per test (or per module) in a directory the caller gives:
the registry's home in ``ROOT/registry``, each district's data directory in
``ROOT/district-<code>``. The registry always runs in this process (tests move
its clock); it binds port 0 on 127.0.0.1 and hashes authorization codes at a
tiny scrypt cost, so enrollment takes milliseconds. Every district is enrolled
through the real ``Enroll`` RPC (``enroll``), then runs

- in this process: ``Side.start`` (through ``Pair.start``) runs the real
  ``DistrictServer`` (peer gate, flow, delivery worker) and opens a registrar
  stub on its Unix socket, as the integration and security suites do; or
- as a real ``rt serve`` subprocess: ``World.process`` returns a
  ``DistrictProcess`` (``tests.harness.processes``) a test starts, kills and
  restarts, as the fault suite does.

``World.close()`` stops whatever it started, newest first, then the registry.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy.engine import Engine

from protos.rt.v1 import registrar_pb2_grpc
from registry.home import CA_CERT_FILE, init_home, open_registry
from registry.server import RunningRegistry, start_registry_server
from registry.service import RegistryService
from rt_client.config import DistrictConfig
from rt_client.directory import utc_now
from rt_client.enroll import enroll_district
from rt_client.identity import DistrictIdentity, load_identity
from rt_server.flows.outbox import RetryPolicy
from rt_server.server import DistrictServer
from scripts.loopback import free_port
from tests._databases import Databases
from tests.harness.processes import DistrictProcess

TEST_SCRYPT_N = 16  # the scrypt cost in tests: fast, still the real code path

# The two districts of most tests: A (PRIOR) holds the records, B (NEW) asks for them.
PRIOR = "1964733"
NEW = "3768338"
PRIOR_SCHOOL = "19647331932334"
NEW_SCHOOL = "37683383732997"

# Retries in tests: fast, so a district that comes back is reached at once.
FAST_RETRY = RetryPolicy(base_seconds=0.05, max_seconds=0.2)


# --- the registry --------------------------------------------------------------------------------


class MutableClock:
    """A clock tests can move forward; starts at the real time (TLS checks real time)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or utc_now()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when


@dataclass
class RegistryHandle:
    """A running registry and what a district needs to enroll with it."""

    home: Path
    address: str  # mutual TLS
    enroll_address: str  # server-auth TLS, Enroll only
    ca_path: Path
    ca_pem: bytes
    signing_key_hex: str
    service: RegistryService
    running: RunningRegistry
    clock: MutableClock
    database_url: str

    @property
    def signing_key(self) -> bytes:
        return bytes.fromhex(self.signing_key_hex)

    def stop(self) -> None:
        self.running.stop(grace=None)

    def restart(self) -> None:
        """Serve the stopped registry again, from its home, on the same two addresses."""
        config, service, keys = open_registry(self.home, clock=self.clock)
        self.service = service
        self.running = start_registry_server(
            config, service, keys.server_tls, listen=self.address, enroll_listen=self.enroll_address
        )

    def enroll_settings(self) -> dict[str, Any]:
        """The registry's part of ``enroll_district``'s arguments: where it is, whom to trust."""
        return {
            "registry_address": self.address,
            "registry_enroll_address": self.enroll_address,
            "registry_ca_pem": self.ca_pem,
            "registry_signing_key": self.signing_key_hex,
        }

    def add_district(
        self,
        code: str,
        name: str | None = None,
        schools: Sequence[tuple[str, str]] | None = None,
        endpoints: Sequence[str] = (),
    ) -> str:
        """Register a district; returns its authorization code."""
        if schools is None:
            schools = [(code + "0000001", f"School 1 of {code}")]
        return self.service.add_district(code, name or f"District {code}", schools, endpoints)


def start_registry(home: Path, **settings: Any) -> RegistryHandle:
    """Create a registry in ``home`` and serve it on loopback (the caller stops it)."""
    init_home(
        home,
        listen="127.0.0.1:0",
        enroll_listen="127.0.0.1:0",
        scrypt_n=TEST_SCRYPT_N,
        **settings,
    )
    clock = MutableClock()
    config, service, keys = open_registry(home, clock=clock)
    running = start_registry_server(config, service, keys.server_tls)
    return RegistryHandle(
        home=home,
        address=f"127.0.0.1:{running.port}",
        enroll_address=f"127.0.0.1:{running.enroll_port}",
        ca_path=home / CA_CERT_FILE,
        ca_pem=(home / CA_CERT_FILE).read_bytes(),
        signing_key_hex=keys.signing_public_hex,
        service=service,
        running=running,
        clock=clock,
        database_url=config.database_url,
    )


# --- enrolling a district ------------------------------------------------------------------------


@dataclass(frozen=True)
class EnrolledDistrict:
    config: DistrictConfig
    identity: DistrictIdentity

    @property
    def code(self) -> str:
        return self.config.district_code


def enroll(
    registry: RegistryHandle,
    folder: Path,
    code: str,
    name: str | None = None,
    schools: Sequence[tuple[str, str]] | None = None,
    *,
    endpoints: Sequence[str] | None = None,
    databases: Databases | None = None,
    **config: Any,
) -> EnrolledDistrict:
    """Register ``code`` at the registry and enroll it into ``folder/district-<code>``.

    ``endpoints`` defaults to one free loopback port (the config listens on the
    first); ``config`` is passed on to ``enroll_district`` (``database_url``, ...).
    With ``databases`` on PostgreSQL, and no ``database_url`` given, the district
    gets a fresh database there, migrated as ``rt db upgrade`` does; on SQLite
    the default file in its data directory.
    """
    if databases is not None and "database_url" not in config:
        url = databases.district_url(f"district_{code}")
        if url is not None:
            config["database_url"] = url
    auth_code = registry.add_district(code, name, schools)
    cfg = enroll_district(
        code=code,
        authorization_code=auth_code,
        **registry.enroll_settings(),
        endpoints=list(endpoints or [f"127.0.0.1:{free_port()}"]),
        data_dir=folder / f"district-{code}",
        clock=registry.clock,
        **config,
    )
    return EnrolledDistrict(config=cfg, identity=load_identity(cfg.data_dir))


# --- districts in this process -------------------------------------------------------------------


def stop_district_server(server: DistrictServer, grace: float = 1) -> None:
    """``server.stop(grace)``: a short grace, as the tests' servers are idle when they stop."""
    server.stop(grace=grace)


@dataclass
class Side:
    """One district: its config, and once started its server and registrar stub."""

    code: str
    school: str
    enrolled: EnrolledDistrict
    server: DistrictServer | None = None
    channel: grpc.Channel | None = None
    stub: registrar_pb2_grpc.RegistrarStub | None = None

    @property
    def engine(self) -> Engine:
        """The district's own engine (the running server's)."""
        assert self.server is not None and self.server.district is not None
        return self.server.district.engine

    @property
    def rpc(self) -> registrar_pb2_grpc.RegistrarStub:
        assert self.stub is not None, "district not started"
        return self.stub

    def start(self, retry: RetryPolicy = FAST_RETRY, clock: Any = None) -> Side:
        """Run the real ``DistrictServer`` here; open a registrar stub on its socket.

        ``clock`` times the server's certificate renewal (default: real time)."""
        self.server = DistrictServer(self.enrolled.config, retry=retry, clock=clock or utc_now)
        self.server.start()
        self.channel = grpc.insecure_channel(f"unix:{self.enrolled.config.registrar_socket}")
        self.stub = registrar_pb2_grpc.RegistrarStub(self.channel)
        return self

    def stop(self) -> None:
        assert self.server is not None and self.channel is not None
        self.channel.close()
        stop_district_server(self.server, grace=1)


@dataclass
class Pair:
    a: Side  # the prior district: holds the records
    b: Side  # the requesting district
    started: list[Side] = field(default_factory=list)

    def start(self, side: Side, retry: RetryPolicy = FAST_RETRY, clock: Any = None) -> Side:
        side.start(retry, clock)
        self.started.append(side)
        return side

    def stop(self) -> None:
        """Stop every side started, newest first."""
        for side in reversed(self.started):
            side.stop()


def enroll_pair(
    registry: RegistryHandle, folder: Path, *, databases: Databases | None = None, **config: Any
) -> Pair:
    """A (PRIOR, Lincoln High) and B (NEW, Roosevelt High) enrolled, not started."""
    prior = enroll(
        registry,
        folder,
        PRIOR,
        "Prior Unified",
        [(PRIOR_SCHOOL, "Lincoln High")],
        databases=databases,
        **config,
    )
    new = enroll(
        registry,
        folder,
        NEW,
        "New Unified",
        [(NEW_SCHOOL, "Roosevelt High")],
        databases=databases,
        **config,
    )
    return Pair(Side(PRIOR, PRIOR_SCHOOL, prior), Side(NEW, NEW_SCHOOL, new))


# --- the world -----------------------------------------------------------------------------------


class World:
    """A registry (in this process) and the districts enrolled with it; ``close()`` stops them.

    With ``databases`` each district's database is on that backend (a fresh
    PostgreSQL database each, or the default SQLite file); the registry's is
    whatever ``start`` was given.
    """

    def __init__(
        self,
        registry: RegistryHandle,
        root: Path,
        databases: Databases | None = None,
        *,
        started: list[Side] | None = None,
    ) -> None:
        self.registry = registry
        self.root = root
        self.databases = databases
        self.started: list[Side] = [] if started is None else started  # in this process
        self.processes: list[DistrictProcess] = []  # as subprocesses

    @classmethod
    def start(
        cls, root: Path, databases: Databases | None = None, **registry_settings: Any
    ) -> World:
        """Create and serve a registry in ``root/registry`` (``registry_settings``: its config)."""
        return cls(start_registry(root / "registry", **registry_settings), root, databases)

    def enroll(
        self,
        code: str,
        name: str | None = None,
        schools: Sequence[tuple[str, str]] | None = None,
        *,
        endpoints: Sequence[str] | None = None,
        **config: Any,
    ) -> EnrolledDistrict:
        """``enroll`` with this world's registry, directory and databases."""
        return enroll(
            self.registry,
            self.root,
            code,
            name,
            schools,
            endpoints=endpoints,
            databases=self.databases,
            **config,
        )

    def pair(self, **config: Any) -> Pair:
        """A and B enrolled, not started (``pair.start(pair.a)``); stopped by ``close``."""
        pair = enroll_pair(self.registry, self.root, databases=self.databases, **config)
        pair.started = self.started
        return pair

    def process(
        self, code: str, school: str, *, endpoint: str | None = None, **config: Any
    ) -> DistrictProcess:
        """Register and enroll a district that runs as ``rt serve`` (not started yet)."""
        enrolled = self.enroll(
            code,
            f"District {code}",
            [(school, f"School {school}")],
            endpoints=[endpoint] if endpoint else None,
            **config,
        )
        district = DistrictProcess(
            enrolled.config, enrolled.config.data_dir / "district.toml", school
        )
        self.processes.append(district)
        return district

    def close(self) -> None:
        """Stop every district started (subprocesses, then in-process), then the registry."""
        for district in reversed(self.processes):
            district.begin_stop()  # all shut down at once: each takes about a second
        for district in reversed(self.processes):
            district.stop()
        for side in reversed(self.started):
            side.stop()
        self.registry.stop()
