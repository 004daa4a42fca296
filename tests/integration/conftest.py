"""Fixtures for integration tests: a real registry and real enrolled districts over real TLS.

Thin fixtures over the one test world (``tests.harness.world``). Everything is
generated per test in a temporary directory (CA, keys, certificates,
databases); servers bind port 0 on 127.0.0.1. Scrypt runs at a tiny cost so
enrollment takes milliseconds.

Every test that uses a registry or a district runs twice: on SQLite (files in
the test's directory, created the way ``rt serve`` creates them on first start)
and on PostgreSQL (fresh databases per test on the server ``make test``
starts, migrated the way an operator does, with ``rt db upgrade``; dropped
afterwards). Without ``RT_TEST_POSTGRES_URL`` the PostgreSQL runs are skipped.

- ``databases`` (``tests/conftest.py``): the backend under test, fresh databases on it.
- ``harness``: the test's ``World`` (registry, districts), closed at teardown.
- ``registry``: a started registry (``RegistryHandle``), with ``add_district``.
- ``enrolled_district``: ``enrolled_district("1964733")`` enrolls a district
  through the real ``Enroll`` RPC and returns its config and loaded identity.
- ``pair``: districts A and B enrolled, not started (``pair.start(pair.a)``);
  ``districts``: both started (``tests.harness.flow`` drives them).
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

import threading  # noqa: E402
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from protos.rt.v1 import common_pb2, peer_pb2_grpc
from rt_client.directory import Directory, DirectoryClient, registry_channel
from rt_client.errors import PeerAuthError
from rt_client.tls import negotiated_tls_version
from rt_server.flows.claims import require_claimed
from rt_server.rpc.auth import PeerAuthInterceptor, current_peer
from tests._databases import Databases
from tests.harness.cli import Rt, rt_runner
from tests.harness.world import EnrolledDistrict, MutableClock, Pair, RegistryHandle, World


@pytest.fixture
def harness(tmp_path: Path, databases: Databases) -> Iterator[World]:
    """The test's registry (on the backend under test) and its districts, stopped at teardown."""
    settings = {"database_url": databases.url("registry")} if databases.postgres else {}
    world = World.start(tmp_path, databases, **settings)
    try:
        yield world
    finally:
        world.close()


@pytest.fixture
def registry(harness: World) -> RegistryHandle:
    return harness.registry


@pytest.fixture
def enrolled_district(harness: World) -> Callable[..., EnrolledDistrict]:
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
        return harness.enroll(
            code, name, schools, endpoints=endpoints or ([endpoint] if endpoint else None)
        )

    return enroll_here


@pytest.fixture
def pair(harness: World) -> Pair:
    """Two enrolled districts, not started (``pair.start(pair.a)``)."""
    return harness.pair()


@pytest.fixture
def districts(pair: Pair) -> Pair:
    """Both districts started."""
    pair.start(pair.a)
    pair.start(pair.b)
    return pair


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


@pytest.fixture
def rt(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Rt:
    """``rt(side, *args)``: the ``rt`` CLI in this process against ``side`` (a ``Run``)."""
    return rt_runner(capfd, monkeypatch)
