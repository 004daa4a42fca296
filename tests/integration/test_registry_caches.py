"""The registry's caches of verified callers and signed entries (``registry.service``).

A change made through the serving process is served at once; a change made by
another process on the same database (``rt-registry district revoke``, a
replica) within ``CACHE_SECONDS``, timed here by an injected monotonic clock.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from protos.rt.v1 import registry_pb2, registry_pb2_grpc
from registry.home import open_registry
from registry.service import CACHE_SECONDS, RegistryService
from registry.store import RegistryStore
from rt_client.directory import DistrictStatus, verify_entry
from rt_client.enroll import enroll_district
from rt_client.errors import PeerAuthError
from rt_client.identity import load_identity
from rt_client.rotation import update_district_entry
from rt_client.tls import REGISTRY_SERVER_NAME, TlsIdentity, secure_channel
from scripts.loopback import free_port

A, B = "1964733", "1111111"


@pytest.fixture
def stubs() -> Iterator[list[grpc.Channel]]:
    opened: list[grpc.Channel] = []
    yield opened
    for channel in opened:
        channel.close()


def stub(registry, tls: TlsIdentity, opened: list[grpc.Channel]) -> registry_pb2_grpc.RegistryStub:
    channel = secure_channel(registry.address, tls.channel_credentials(), REGISTRY_SERVER_NAME)
    opened.append(channel)
    return registry_pb2_grpc.RegistryStub(channel)


def look_up(client: registry_pb2_grpc.RegistryStub, code: str, registry):
    envelope = client.LookupDistrict(
        registry_pb2.LookupDistrictRequest(district_code=code), timeout=5
    )
    return verify_entry(envelope, registry.signing_key, registry.clock())


def test_a_revoked_district_is_refused_at_once_and_served_as_revoked(
    registry, enrolled_district, stubs
) -> None:
    a, b = enrolled_district(A), enrolled_district(B)
    a_stub, b_stub = stub(registry, a.identity.tls, stubs), stub(registry, b.identity.tls, stubs)
    for _ in range(2):  # both cached: A's certificate, and each entry
        assert look_up(a_stub, B, registry).district_code == B
        assert look_up(b_stub, A, registry).status is DistrictStatus.ACTIVE
    assert registry.service.revoke(A)
    with pytest.raises(grpc.RpcError) as refused:
        look_up(a_stub, B, registry)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    entry = look_up(b_stub, A, registry)
    assert entry.status is DistrictStatus.REVOKED and entry.version == 2


def test_an_update_is_served_at_once_and_the_rotated_away_certificate_refused(
    registry, enrolled_district, stubs
) -> None:
    a, b = enrolled_district(A), enrolled_district(B)
    old_stub, b_stub = stub(registry, a.identity.tls, stubs), stub(registry, b.identity.tls, stubs)
    for _ in range(2):
        assert look_up(old_stub, B, registry).district_code == B
        assert look_up(b_stub, A, registry).version == 1
    identity = update_district_entry(
        a.config, rotate_tls_key=True, endpoints=["localhost:7998"], clock=registry.clock
    )
    entry = look_up(b_stub, A, registry)
    assert entry.version == 2 and entry.endpoints == ("localhost:7998",)
    assert entry.tls_spki_sha256 == identity.tls.spki_sha256()
    with pytest.raises(grpc.RpcError) as refused:
        look_up(old_stub, B, registry)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert look_up(stub(registry, identity.tls, stubs), B, registry).district_code == B


def test_re_enrolling_with_new_keys_refuses_the_old_certificate_at_once(
    registry, enrolled_district, stubs, tmp_path
) -> None:
    a, b = enrolled_district(A), enrolled_district(B)
    old_stub, b_stub = stub(registry, a.identity.tls, stubs), stub(registry, b.identity.tls, stubs)
    for _ in range(2):
        assert look_up(old_stub, B, registry).district_code == B
        assert look_up(b_stub, A, registry).version == 1
    config = enroll_district(
        code=A,
        authorization_code=registry.service.rotate_code(A),
        **registry.enroll_settings(),
        endpoints=[f"127.0.0.1:{free_port()}"],
        data_dir=tmp_path / "again",
        clock=registry.clock,
    )
    identity = load_identity(config.data_dir)
    assert look_up(b_stub, A, registry).tls_spki_sha256 == identity.tls.spki_sha256()
    with pytest.raises(grpc.RpcError) as refused:
        look_up(old_stub, B, registry)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_change_by_another_process_is_served_within_the_cache_bound(
    registry, enrolled_district
) -> None:
    a = enrolled_district(A)
    ticks = Ticks()
    config, _, keys = open_registry(registry.home, clock=registry.clock)
    store = RegistryStore.open(config.database_url)
    try:
        replica = RegistryService(
            store, keys.ca, keys.signing_key, config, registry.clock, monotonic=ticks
        )
        cert = a.identity.certificate
        assert replica.authenticate(cert) == A
        before = replica.lookup(A)
        registry.service.revoke(A)  # another process, as the revoke command is
        ticks.now += CACHE_SECONDS * 0.9  # within the bound: what was verified still stands
        assert replica.authenticate(cert) == A
        assert replica.lookup(A) == before
        ticks.now += CACHE_SECONDS * 0.1  # the bound: both re-read
        with pytest.raises(PeerAuthError):
            replica.authenticate(cert)
        revoked = verify_entry(replica.lookup(A), registry.signing_key, registry.clock())
        assert revoked.status is DistrictStatus.REVOKED
    finally:
        store.close()
