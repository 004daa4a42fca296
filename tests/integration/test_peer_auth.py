"""Peer authorization (DESIGN.md section 3) against a real registry over real mutual TLS.

District A serves a test-only ``DistrictPeer`` behind the real
``PeerAuthInterceptor``, with a ``DirectoryClient`` pointed at the real
registry. Every refused call is checked twice: the expected status, and the
servicer recorded nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.rt.v1 import common_pb2, peer_pb2, peer_pb2_grpc
from registry.ca import RegistryCA
from registry.home import CA_CERT_FILE, CA_KEY_FILE
from rt_client.directory import DirectoryClient
from rt_client.errors import PeerAuthError
from rt_client.identity import load_identity
from rt_client.ids import DistrictCode, spiffe_id
from rt_client.rotation import update_district_entry
from rt_client.tls import TlsIdentity, district_server_name, secure_channel
from rt_server.rpc.auth import (
    NOT_AUTHORIZED,
    PeerAuthInterceptor,
    authorize_peer,
    current_peer,
)

A, B, C = "1964733", "1111111", "2222222"
A_NAME = district_server_name(A)  # the gated server presents A's certificate
TTL = 300


@dataclass
class World:
    registry: Any
    a: Any
    b: Any
    c: Any
    server: Any
    clock: Any  # A's directory clock: advance it to expire A's cache
    directory: DirectoryClient
    channels: list[grpc.Channel] = field(default_factory=list)

    def stub(self, tls: TlsIdentity) -> peer_pb2_grpc.DistrictPeerStub:
        channel = secure_channel(self.server.address, tls.channel_credentials(), A_NAME)
        self.channels.append(channel)
        return peer_pb2_grpc.DistrictPeerStub(channel)

    def submit(self, tls: TlsIdentity, signer: str) -> common_pb2.SignedEnvelope:
        return self.stub(tls).SubmitRequest(
            common_pb2.SignedEnvelope(signer_district=signer), timeout=5
        )

    @property
    def calls(self) -> list[tuple[str, str, object]]:
        return list(self.server.servicer.calls)


@pytest.fixture
def world(
    registry, enrolled_district, directory_client, gated_peer_server, clock_factory
) -> Iterator[World]:
    a, b, c = enrolled_district(A), enrolled_district(B), enrolled_district(C)
    clock = clock_factory()
    directory = directory_client(a, ttl_seconds=TTL, clock=clock)
    w = World(registry, a, b, c, gated_peer_server(a, directory), clock, directory)
    yield w
    for channel in w.channels:
        channel.close()


def refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate_signed_by_registry_ca(registry, uris: list[str]) -> TlsIdentity:
    """A certificate the registry CA would never issue, signed with its key anyway."""
    ca = RegistryCA.from_pem(
        (registry.home / CA_KEY_FILE).read_bytes(), (registry.home / CA_CERT_FILE).read_bytes()
    )
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mallory")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return TlsIdentity(_pem(key), cert.public_bytes(serialization.Encoding.PEM), registry.ca_pem)


# -- the accepted path -------------------------------------------------------------


def test_an_enrolled_district_is_authorized(world: World) -> None:
    reply = world.submit(world.b.identity.tls, B)
    assert reply.signer_district == B
    assert world.calls == [("SubmitRequest", B, "TLSv1.3")]


def test_a_streaming_call_is_authorized_and_sees_its_peer(world: World) -> None:
    frames = [peer_pb2.DeliveryFrame(ciphertext=b"x" * 10) for _ in range(3)]
    reply = world.stub(world.b.identity.tls).DeliverRecords(iter(frames), timeout=5)
    assert reply.signer_district == B
    assert world.calls == [("DeliverRecords", B, 3)]


# -- no identity, or an identity from elsewhere -------------------------------------


def test_a_client_without_certificate_is_refused(world: World) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=world.registry.ca_pem)
    channel = secure_channel(world.server.address, creds, A_NAME)
    world.channels.append(channel)
    err = refused(
        lambda: peer_pb2_grpc.DistrictPeerStub(channel).SubmitRequest(
            common_pb2.SignedEnvelope(signer_district=B), timeout=5
        )
    )
    # The listener requires a client certificate: the handshake itself fails.
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert world.calls == []


def test_a_certificate_from_another_ca_is_refused(world: World) -> None:
    other_ca = RegistryCA.create("Some Other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = other_ca.issue_district_certificate_for_key(
        key.public_key(), DistrictCode(B), dt.timedelta(days=1)
    )
    # Same district identity, same shape, wrong issuer.
    impostor = TlsIdentity(
        _pem(key), cert.public_bytes(serialization.Encoding.PEM), world.registry.ca_pem
    )
    err = refused(lambda: world.submit(impostor, B))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert world.calls == []


def test_a_registry_ca_certificate_with_two_uri_sans_is_refused(world: World) -> None:
    tls = _certificate_signed_by_registry_ca(
        world.registry, [spiffe_id(DistrictCode(B)), spiffe_id(DistrictCode(C))]
    )
    err = refused(lambda: world.submit(tls, B))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details() == NOT_AUTHORIZED
    assert world.calls == []


def test_a_registry_ca_certificate_without_a_district_uri_is_refused(world: World) -> None:
    for uris in ([], ["spiffe://records-transfer/registry"]):
        tls = _certificate_signed_by_registry_ca(world.registry, uris)
        err = refused(lambda tls=tls: world.submit(tls, B))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert world.calls == []


def test_a_ca_signed_certificate_for_a_key_the_directory_does_not_pin_is_refused(
    world: World,
) -> None:
    # A valid-looking certificate for B (right CA, one URI SAN), but not B's key.
    tls = _certificate_signed_by_registry_ca(world.registry, [spiffe_id(DistrictCode(B))])
    err = refused(lambda: world.submit(tls, B))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert world.calls == []


def test_an_unregistered_district_is_refused(world: World) -> None:
    tls = _certificate_signed_by_registry_ca(world.registry, [spiffe_id(DistrictCode("7777777"))])
    err = refused(lambda: world.submit(tls, "7777777"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert world.calls == []


# -- an identity that is refused ----------------------------------------------------


def test_a_district_claiming_to_be_another_is_refused(world: World) -> None:
    # TLS peer C, message names B.
    err = refused(lambda: world.submit(world.c.identity.tls, B))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert world.calls == []


def test_a_revoked_district_is_refused_once_the_directory_cache_expires(world: World) -> None:
    world.submit(world.c.identity.tls, C)
    world.registry.service.revoke(C)
    # Within the TTL the cached entry still answers: that is the propagation delay.
    world.submit(world.c.identity.tls, C)
    before = world.calls
    world.clock.advance(TTL + 1)
    err = refused(lambda: world.submit(world.c.identity.tls, C))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == NOT_AUTHORIZED
    frames = iter([peer_pb2.DeliveryFrame(ciphertext=b"x")])
    err = refused(lambda: world.stub(world.c.identity.tls).DeliverRecords(frames, timeout=5))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert world.calls == before
    # Others are unaffected.
    world.submit(world.b.identity.tls, B)


def test_a_rotated_away_certificate_is_refused(world: World) -> None:
    old_tls = world.c.identity.tls
    world.submit(old_tls, C)  # A now caches C's entry with the old key
    update_district_entry(world.c.config, rotate_tls_key=True)
    new_tls = load_identity(world.c.config.data_dir).tls
    assert new_tls.spki_sha256() != old_tls.spki_sha256()
    # The new key is accepted at once (a key mismatch refreshes the cached entry)...
    world.submit(new_tls, C)
    before = world.calls
    # ...and from then on the old certificate, still valid and CA-signed, is refused.
    err = refused(lambda: world.submit(old_tls, C))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert world.calls == before


def test_a_key_renewed_twice_within_the_refresh_interval_is_accepted_each_time(
    world: World,
) -> None:
    """Renewals seconds apart: each new key costs one lookup, none waits 30 s."""
    world.submit(world.c.identity.tls, C)
    for _ in range(2):
        update_district_entry(world.c.config, rotate_tls_key=True)
        world.submit(load_identity(world.c.config.data_dir).tls, C)


def test_a_rotated_away_certificate_is_refused_after_the_ttl_without_the_new_key_being_seen(
    world: World,
) -> None:
    old_tls = world.c.identity.tls
    world.submit(old_tls, C)
    update_district_entry(world.c.config, rotate_tls_key=True)
    before = world.calls
    world.clock.advance(TTL + 1)
    err = refused(lambda: world.submit(old_tls, C))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert world.calls == before


def test_refusals_are_logged_with_the_reason(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rt_server.rpc.auth")
    tls = _certificate_signed_by_registry_ca(world.registry, [spiffe_id(DistrictCode(B))])
    refused(lambda: world.submit(tls, B))
    messages = [r.getMessage() for r in caplog.records if r.name == "rt_server.rpc.auth"]
    assert any("PERMISSION_DENIED" in m and "does not pin" in m for m in messages)


# -- what is not gated, and when the directory is down --------------------------------


def test_health_checks_are_not_gated(world: World) -> None:
    world.registry.service.revoke(C)
    world.clock.advance(TTL + 1)
    channel = secure_channel(
        world.server.address, world.c.identity.tls.channel_credentials(), A_NAME
    )
    world.channels.append(channel)
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert (
        refused(lambda: world.submit(world.c.identity.tls, C)).code()
        == grpc.StatusCode.PERMISSION_DENIED
    )


def test_an_unreachable_registry_keeps_known_peers_working_and_refuses_unknown_ones(
    world: World,
) -> None:
    world.submit(world.b.identity.tls, B)  # B's entry is now cached
    world.registry.running.stop(grace=None)
    world.clock.advance(TTL + 1)  # past the TTL: A must ask the registry, which is down
    world.submit(world.b.identity.tls, B)  # the cached, still valid entry is used
    before = world.calls
    err = refused(lambda: world.submit(world.c.identity.tls, C))  # never seen: cannot be checked
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert world.calls == before


# -- the interceptor's own mechanics -----------------------------------------------------


def test_every_handler_kind_is_gated_and_sees_its_peer(world: World) -> None:
    """unary-stream and stream-stream handlers too (DistrictPeer has none yet)."""

    def fanout(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for _ in range(3):
            yield current_peer().code.encode()

    def echo(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for _ in requests:
            yield current_peer().code.encode()

    handlers = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Fanout": grpc.unary_stream_rpc_method_handler(fanout),
            "Echo": grpc.stream_stream_rpc_method_handler(echo),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[PeerAuthInterceptor(world.directory, gated_prefix="/test.Echo/")],
    )
    server.add_generic_rpc_handlers([handlers])
    port = server.add_secure_port("127.0.0.1:0", world.a.identity.tls.server_credentials())
    server.start()
    try:
        good = secure_channel(
            f"127.0.0.1:{port}", world.b.identity.tls.channel_credentials(), A_NAME
        )
        assert list(good.unary_stream("/test.Echo/Fanout")(b"", timeout=5)) == [B.encode()] * 3
        assert (
            list(good.stream_stream("/test.Echo/Echo")(iter([b"1", b"2"]), timeout=5))
            == [B.encode()] * 2
        )
        bad_tls = _certificate_signed_by_registry_ca(world.registry, [spiffe_id(DistrictCode(B))])
        bad = secure_channel(f"127.0.0.1:{port}", bad_tls.channel_credentials(), A_NAME)
        err = refused(lambda: list(bad.unary_stream("/test.Echo/Fanout")(b"", timeout=5)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        err = refused(lambda: list(bad.stream_stream("/test.Echo/Echo")(iter([b"1"]), timeout=5)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        good.close()
        bad.close()
    finally:
        server.stop(None).wait()


def _auth_context(tls: TlsIdentity, version: bytes | None = b"TLSv1.3") -> dict[str, list[bytes]]:
    context = {"transport_security_type": [b"ssl"], "x509_pem_cert": [tls.cert_pem]}
    if version is not None:
        context["ssl_tls_version"] = [version]
    return context


def test_authorize_peer_accepts_tls_1_2_and_1_3(world: World) -> None:
    for version in (b"TLSv1.2", b"TLSv1.3"):
        peer = authorize_peer(_auth_context(world.b.identity.tls, version), world.directory)
        assert peer.code == B and peer.entry.district_code == B


@pytest.mark.parametrize("version", [b"TLSv1.1", b"TLSv1", b"SSLv3", b"", None])
def test_authorize_peer_refuses_other_or_unknown_tls_versions(
    world: World, version: bytes | None
) -> None:
    with pytest.raises(PeerAuthError, match="TLS version"):
        authorize_peer(_auth_context(world.b.identity.tls, version), world.directory)


def test_authorize_peer_refuses_a_call_without_tls(world: World) -> None:
    with pytest.raises(PeerAuthError, match="no TLS client certificate"):
        authorize_peer({}, world.directory)
    with pytest.raises(PeerAuthError):
        authorize_peer(
            {
                "transport_security_type": [b"insecure"],
                "x509_pem_cert": [world.b.identity.tls.cert_pem],
            },
            world.directory,
        )


def test_current_peer_refuses_outside_an_authorized_call() -> None:
    with pytest.raises(PeerAuthError):
        current_peer()
