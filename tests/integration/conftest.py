"""Fixtures for integration tests: a real registry and real enrolled districts over real TLS.

Everything is generated per test in a temporary directory (CA, keys,
certificates, databases); servers bind port 0 on 127.0.0.1. Scrypt runs at a
tiny cost so enrollment takes milliseconds.

Every test that uses a registry or a district runs twice: on SQLite (files in
the test's directory, created the way ``rt serve`` creates them on first start)
and on PostgreSQL (fresh databases per test on the server ``make test``
starts, migrated the way an operator does, with ``rt db upgrade``; dropped
afterwards). Without ``RT_TEST_POSTGRES_URL`` the PostgreSQL runs are skipped.

- ``databases`` (``tests/conftest.py``): the backend under test, fresh databases on it.
- ``registry``: a started registry (``RegistryHandle``), with ``add_district``.
- ``enrolled_district``: ``enrolled_district("1964733")`` enrolls a district
  through the real ``Enroll`` RPC and returns its config and loaded identity.
- ``directory_client``: a ``DirectoryClient`` for a district, talking to the
  registry over mutual TLS (channels closed at teardown).
- ``gated_peer_server``: a ``DistrictPeer`` server for a district, behind the
  real ``PeerAuthInterceptor``, whose test servicer only records who called
  (the real flow's servicer is tested elsewhere).
"""

from __future__ import annotations

import sys

from rt_client.tls import configure_grpc_tls

# gRPC reads GRPC_SSL_CIPHER_SUITES once, when grpc is first imported. Under
# pytest that has usually happened before any conftest loads (the pytest-grpc
# plugin imports grpc), so the restriction is applied here only if it still
# can be. The cipher-suite tests therefore run their servers in subprocesses
# that call configure_grpc_tls() first, exactly as the real entry points do.
if "grpc" not in sys.modules:
    configure_grpc_tls()

import socket  # noqa: E402
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from protos.rt.v1 import common_pb2, peer_pb2_grpc
from registry.home import CA_CERT_FILE, init_home, open_registry
from registry.server import RunningRegistry, start_registry_server
from registry.service import RegistryService
from rt_client.config import DistrictConfig
from rt_client.directory import Directory, DirectoryClient, registry_channel, utc_now
from rt_client.enroll import enroll_district
from rt_client.errors import PeerAuthError
from rt_client.identity import DistrictIdentity, load_identity
from rt_client.tls import negotiated_tls_version
from rt_server.flows.claims import require_claimed
from rt_server.rpc.auth import PeerAuthInterceptor, current_peer
from tests._databases import Databases

TEST_SCRYPT_N = 16  # the scrypt cost in tests: fast, still the real code path


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


@dataclass(frozen=True)
class EnrolledDistrict:
    config: DistrictConfig
    identity: DistrictIdentity

    @property
    def code(self) -> str:
        return self.config.district_code


def free_port() -> int:
    """A port free right now on 127.0.0.1 (for configs that must name their port up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def enroll(
    registry: RegistryHandle,
    folder: Path,
    code: str,
    name: str | None = None,
    schools: Sequence[tuple[str, str]] | None = None,
    *,
    endpoints: Sequence[str] | None = None,
    **config: Any,
) -> EnrolledDistrict:
    """Register ``code`` at the registry and enroll it into ``folder/district-<code>``.

    ``endpoints`` defaults to one free loopback port (the config listens on the
    first); ``config`` is passed on to ``enroll_district`` (``database_url``, ...).
    """
    auth_code = registry.add_district(code, name, schools)
    cfg = enroll_district(
        code=code,
        authorization_code=auth_code,
        registry_address=registry.address,
        registry_enroll_address=registry.enroll_address,
        registry_ca_pem=registry.ca_pem,
        registry_signing_key=registry.signing_key_hex,
        endpoints=list(endpoints or [f"127.0.0.1:{free_port()}"]),
        data_dir=folder / f"district-{code}",
        clock=registry.clock,
        **config,
    )
    return EnrolledDistrict(config=cfg, identity=load_identity(cfg.data_dir))


@pytest.fixture
def registry(tmp_path: Path, databases: Databases) -> Iterator[RegistryHandle]:
    settings = {"database_url": databases.url("registry")} if databases.postgres else {}
    handle = start_registry(tmp_path / "registry", **settings)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def enrolled_district(
    registry: RegistryHandle, tmp_path: Path, databases: Databases
) -> Callable[..., EnrolledDistrict]:
    """Factory: ``enrolled_district(code, name=None, schools=None, endpoint=None, endpoints=None)``.

    ``endpoints`` lists several (one per replica; the config listens on the
    first). The district's database is on the backend under test (see ``Databases``).
    """

    def enroll_here(
        code: str,
        name: str | None = None,
        schools: Sequence[tuple[str, str]] | None = None,
        endpoint: str | None = None,
        endpoints: Sequence[str] | None = None,
    ) -> EnrolledDistrict:
        database_url = databases.district_url(f"district_{code}")
        extra = {"database_url": database_url} if database_url else {}
        return enroll(
            registry,
            tmp_path,
            code,
            name,
            schools,
            endpoints=endpoints or ([endpoint] if endpoint else None),
            **extra,
        )

    return enroll_here


@pytest.fixture
def clock_factory() -> type[MutableClock]:
    """``MutableClock`` for tests that need their own movable clock."""
    return MutableClock


@dataclass
class _Channels:
    opened: list[grpc.Channel] = field(default_factory=list)


@pytest.fixture
def directory_client(registry: RegistryHandle) -> Iterator[Callable[..., DirectoryClient]]:
    """Factory: ``directory_client(district, ttl_seconds=300, clock=None)``."""
    channels = _Channels()

    def make(
        district: EnrolledDistrict,
        ttl_seconds: float = 300,
        clock: Callable[[], datetime] | None = None,
    ) -> DirectoryClient:
        channel = registry_channel(registry.address, district.identity.tls)
        channels.opened.append(channel)
        return DirectoryClient.for_registry(
            channel,
            registry.signing_key,
            ttl_seconds=ttl_seconds,
            clock=clock or registry.clock,
            timeout=5.0,
        )

    yield make
    for channel in channels.opened:
        channel.close()


class RecordingPeer(peer_pb2_grpc.DistrictPeerServicer):
    """A test-only DistrictPeer: records each authorized call as (method, peer, detail)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []
        self._lock = threading.Lock()

    def _record(self, method: str, peer: str, detail: object) -> None:
        with self._lock:
            self.calls.append((method, peer, detail))

    def SubmitRequest(
        self, request: common_pb2.SignedEnvelope, context: grpc.ServicerContext
    ) -> common_pb2.SignedEnvelope:
        try:
            peer = current_peer()
            require_claimed(request.signer_district, peer.code, "the envelope's signer")
        except PeerAuthError:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "not authorized")
        self._record("SubmitRequest", peer.code, negotiated_tls_version(context.auth_context()))
        return common_pb2.SignedEnvelope(signer_district=peer.code)

    def DeliverRecords(
        self, request_iterator, context: grpc.ServicerContext
    ) -> common_pb2.SignedEnvelope:
        peer = current_peer()
        frames = sum(1 for _ in request_iterator)
        self._record("DeliverRecords", peer.code, frames)
        return common_pb2.SignedEnvelope(signer_district=peer.code)


@dataclass
class GatedServer:
    port: int
    servicer: RecordingPeer
    server: grpc.Server

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def gated_peer_server() -> Iterator[Callable[[EnrolledDistrict, Directory], GatedServer]]:
    """Factory: ``gated_peer_server(district, directory)`` on 127.0.0.1:0, district's cert."""
    started: list[grpc.Server] = []

    def start(district: EnrolledDistrict, directory: Directory) -> GatedServer:
        servicer = RecordingPeer()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            interceptors=[PeerAuthInterceptor(directory)],
            maximum_concurrent_rpcs=16,
        )
        peer_pb2_grpc.add_DistrictPeerServicer_to_server(servicer, server)
        health_servicer = health.HealthServicer()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        port = server.add_secure_port("127.0.0.1:0", district.identity.tls.server_credentials())
        server.start()
        started.append(server)
        return GatedServer(port=port, servicer=servicer, server=server)

    yield start
    for server in started:
        server.stop(None).wait()
