"""Who answers at a district's address: the server-identity attack and what now stops it.

The attack (an outside attacker did this): district C asked the registry for
``UpdateEntry(endpoints=[C's endpoint, B's host:port])``, got back a
certificate with B's host in its SANs, served it on B's address, and received
A's ``SubmitRequest`` for B -- clients checked the server's certificate only
against the endpoint's host, and the CA put whatever endpoint hosts a
district named into its certificate.

Now every district certificate carries exactly its SPIFFE URI and the DNS
name ``<code>.district.records-transfer.internal``, built by the CA from the
code; every client dialling a district checks that name; and the registry
refuses an endpoint another active district holds. Each refusal here is
asserted with what did not change: the registry database, row for row, and
the servicer that would have received the message.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from protos.rt.v1 import common_pb2, peer_pb2_grpc, registry_pb2, registry_pb2_grpc
from registry import cli as registry_cli
from registry.ca import RegistryCA
from rt_client.directory import DirectoryClient, registry_channel
from rt_client.errors import InvalidInput
from rt_client.identity import generate_keys
from rt_client.ids import DistrictCode, spiffe_id
from rt_client.peers import PeerClients
from rt_client.tls import (
    REGISTRY_SERVER_NAME,
    TlsIdentity,
    district_server_name,
    secure_channel,
    server_only_channel,
)
from tests._databases import Databases
from tests.harness import free_port
from tests.harness.world import EnrolledDistrict, RegistryHandle, enroll, start_registry

A, B, C, D = "1964733", "1111111", "2222222", "3333333"
RPC_TIMEOUT = 5.0
TAKEN = "is already registered to another district"


# --- the CA: a district certificate names the district and nothing else --------------------------


def _hostile_csr(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    """A CSR for district A that asks for B's names, B's host, the registry, a CA bit, ..."""
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_id(DistrictCode(A))),  # its own: allowed
        x509.DNSName(district_server_name(B)),
        x509.DNSName("*.district.records-transfer.internal"),
        x509.DNSName(REGISTRY_SERVER_NAME),
        x509.DNSName("rt.b.example"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.RFC822Name("it@b.example"),
    ]
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, district_server_name(B)),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "New Unified"),
                ]
            )
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(key, hashes.SHA256())
    )


def _assert_names_only_a(cert: x509.Certificate, ca: RegistryCA) -> None:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [
        x509.UniformResourceIdentifier(f"spiffe://records-transfer/district/{A}"),
        x509.DNSName(f"{A}.district.records-transfer.internal"),
    ]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == A
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    # Only the extensions the CA itself adds: nothing carried over from the CSR.
    assert {e.oid for e in cert.extensions} == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
    cert.verify_directly_issued_by(ca.certificate)


def test_a_district_certificate_names_the_district_whatever_the_csr_asks_for() -> None:
    ca = RegistryCA.create()
    key = ec.generate_private_key(ec.SECP256R1())
    day = dt.timedelta(days=1)
    _assert_names_only_a(ca.issue_district_certificate(_hostile_csr(key), A, day), ca)
    # A CSR asking for nothing at all gets the same two names.
    bare = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    _assert_names_only_a(ca.issue_district_certificate(bare, A, day), ca)
    # So does the CSR rt enroll builds, whatever endpoints the district has.
    csr = generate_keys(A, ["rt.b.example:7400", "127.0.0.1:7401", "[::1]:7402"]).csr
    _assert_names_only_a(ca.issue_district_certificate(csr, A, day), ca)
    # And a certificate reissued for a pinned key.
    _assert_names_only_a(
        ca.issue_district_certificate_for_key(key.public_key(), DistrictCode(A), day), ca
    )


def test_the_district_server_name_is_made_from_a_valid_code_only() -> None:
    assert district_server_name(A) == "1964733.district.records-transfer.internal"
    for bad in ("196473", "1964733.evil.example", "evil.example/1964733", ""):
        with pytest.raises(InvalidInput):
            district_server_name(bad)
    assert district_server_name(A) != REGISTRY_SERVER_NAME


# --- the registry: an endpoint belongs to one active district ------------------------------------


@pytest.fixture
def registry(tmp_path: Path, databases: Databases) -> Iterator[RegistryHandle]:
    settings = {"database_url": databases.url("registry")} if databases.postgres else {}
    handle = start_registry(tmp_path / "registry", **settings)
    try:
        yield handle
    finally:
        handle.stop()


RegistrySnapshot = dict[str, list[tuple[object, ...]]]


def registry_snapshot(registry: RegistryHandle) -> RegistrySnapshot:
    """Every row of every table of the registry's database."""
    engine = sa.create_engine(registry.database_url)
    try:
        with engine.connect() as conn:
            return {
                table: sorted(
                    (tuple(row) for row in conn.execute(sa.text(f'SELECT * FROM "{table}"'))),
                    key=repr,
                )
                for table in sorted(sa.inspect(conn).get_table_names())
            }
    finally:
        engine.dispose()


def loopback() -> str:
    return f"127.0.0.1:{free_port()}"


def mtls_stub(
    registry: RegistryHandle, district: EnrolledDistrict, channels: list[grpc.Channel]
) -> registry_pb2_grpc.RegistryStub:
    channel = secure_channel(
        registry.address, district.identity.tls.channel_credentials(), REGISTRY_SERVER_NAME
    )
    channels.append(channel)
    return registry_pb2_grpc.RegistryStub(channel)


@pytest.fixture
def channels() -> Iterator[list[grpc.Channel]]:
    opened: list[grpc.Channel] = []
    yield opened
    for channel in opened:
        channel.close()


def refused(call, code: grpc.StatusCode) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    assert err.code() == code, f"{err.code()}: {err.details()}"
    return err


def test_update_entry_naming_another_districts_endpoint_is_refused_and_changes_nothing(
    registry: RegistryHandle, tmp_path: Path, channels: list[grpc.Channel]
) -> None:
    b_endpoint = loopback()
    b_port = b_endpoint.rsplit(":", 1)[1]
    enroll(registry, tmp_path, B, endpoints=[b_endpoint, "rt-b.example:7400", "[::1]:7401"])
    c_endpoint = loopback()
    c = enroll(registry, tmp_path, C, endpoints=[c_endpoint])
    stub = mtls_stub(registry, c, channels)

    def update(endpoints: list[str], *, rotate: bool = False) -> registry_pb2.EnrollResponse:
        keys = (
            generate_keys(C, endpoints).to_proto()
            if rotate
            else registry_pb2.DistrictKeys(endpoints=endpoints)
        )
        request = registry_pb2.UpdateEntryRequest(district_code=C, keys=keys)
        return stub.UpdateEntry(request, timeout=RPC_TIMEOUT)

    before = registry_snapshot(registry)
    # B's endpoints, as they are and spelt otherwise; alone, with C's own, with a new key.
    attempts = [
        [c_endpoint, b_endpoint],
        [b_endpoint],
        [c_endpoint, f"[::ffff:127.0.0.1]:{b_port}"],  # IPv4-mapped: the same listener
        [c_endpoint, "rt-b.example.:7400"],  # a trailing dot names the same host
        [c_endpoint, "[0:0:0:0:0:0:0:1]:7401"],  # ::1, written out
    ]
    for endpoints in attempts:
        for rotate in (False, True):
            err = refused(
                lambda: update(endpoints, rotate=rotate), grpc.StatusCode.INVALID_ARGUMENT
            )
            assert TAKEN in err.details(), err.details()
    assert registry_snapshot(registry) == before  # no entry version, no state, nothing

    # The same host on another port is C's to take: hosts are shared, listeners are not.
    answer = update([c_endpoint, "127.0.0.1:1", "rt-b.example:7500"])
    cert = x509.load_pem_x509_certificate(answer.certificate_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [district_server_name(C)]
    entry = common_pb2.DirectoryEntry.FromString(answer.entry.body)
    assert list(entry.endpoints) == [c_endpoint, "127.0.0.1:1", "rt-b.example:7500"]


def test_enroll_naming_an_active_districts_endpoint_is_refused_and_changes_nothing(
    registry: RegistryHandle, tmp_path: Path, channels: list[grpc.Channel]
) -> None:
    b_endpoint = loopback()
    b_port = b_endpoint.rsplit(":", 1)[1]
    enroll(registry, tmp_path, B, endpoints=[b_endpoint])
    auth_code = registry.add_district(D)
    channel = server_only_channel(registry.enroll_address, registry.ca_pem)
    channels.append(channel)
    stub = registry_pb2_grpc.RegistryStub(channel)

    def enroll_d(endpoints: list[str]) -> registry_pb2.EnrollResponse:
        request = registry_pb2.EnrollRequest(
            district_code=D,
            authorization_code=auth_code,
            keys=generate_keys(D, endpoints).to_proto(),
        )
        return stub.Enroll(request, timeout=RPC_TIMEOUT)

    before = registry_snapshot(registry)
    for endpoints in ([b_endpoint], [loopback(), f"[::ffff:7f00:1]:{b_port}"]):
        err = refused(lambda: enroll_d(endpoints), grpc.StatusCode.INVALID_ARGUMENT)
        assert TAKEN in err.details(), err.details()
    # No certificate, no entry, the code unused and no failed attempt counted.
    assert registry_snapshot(registry) == before
    row = next(r for r in registry.service.districts_overview() if r.code == D)
    assert (row.status, row.version, row.code_outstanding, row.failed_attempts) == (
        "pending",
        None,
        True,
        0,
    )
    # The same code enrolls D at an endpoint of its own.
    answer = enroll_d([loopback()])
    assert common_pb2.DirectoryEntry.FromString(answer.entry.body).district_code == D


def test_district_add_naming_an_active_districts_endpoint_is_refused(
    registry: RegistryHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b_endpoint = loopback()
    enroll(registry, tmp_path, B, endpoints=[b_endpoint])
    before = registry_snapshot(registry)
    with pytest.raises(InvalidInput, match=TAKEN):
        registry.service.add_district(D, "Dup Unified", [], [b_endpoint])
    exit_code = registry_cli.main(
        [
            "--home",
            str(registry.home),
            "district",
            "add",
            "--code",
            D,
            "--name",
            "Dup Unified",
            "--endpoint",
            b_endpoint,
        ]
    )
    assert exit_code != 0
    assert f"endpoint {b_endpoint} {TAKEN}" in capsys.readouterr().err
    assert registry_snapshot(registry) == before
    # A pending district holds nothing yet; a revoked one frees its endpoints.
    registry.add_district(C, endpoints=[loopback()])
    registry.service.revoke(B)
    registry.add_district(D, endpoints=[b_endpoint])


# --- the impersonation: C's valid certificate on B's address -------------------------------------


class RecordingPeer(peer_pb2_grpc.DistrictPeerServicer):
    """A DistrictPeer that records every SubmitRequest it receives (the attacker's ears)."""

    def __init__(self) -> None:
        self.received: list[common_pb2.SignedEnvelope] = []
        self._lock = threading.Lock()

    def SubmitRequest(  # noqa: N802 (gRPC's method name)
        self, request: common_pb2.SignedEnvelope, context: grpc.ServicerContext
    ) -> common_pb2.SignedEnvelope:
        with self._lock:
            self.received.append(request)
        return common_pb2.SignedEnvelope(signer_district="whoever")


def serve_at(address: str, tls: TlsIdentity, servicer: RecordingPeer) -> grpc.Server:
    """A real gRPC server on ``address`` presenting ``tls``'s certificate, mutual TLS required."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    peer_pb2_grpc.add_DistrictPeerServicer_to_server(servicer, server)
    assert server.add_secure_port(address, tls.server_credentials()) != 0
    server.start()
    return server


def test_a_server_with_another_districts_certificate_on_b_s_address_gets_nothing(
    registry: RegistryHandle, tmp_path: Path
) -> None:
    a = enroll(registry, tmp_path, A, endpoints=[loopback()])
    b_endpoint = loopback()
    b = enroll(registry, tmp_path, B, endpoints=[b_endpoint])
    c = enroll(registry, tmp_path, C, endpoints=[loopback()])
    directory_channel = registry_channel(registry.address, a.identity.tls)
    directory = DirectoryClient.for_registry(
        directory_channel, registry.signing_key, clock=registry.clock, timeout=RPC_TIMEOUT
    )
    # What A sends B: a student's records request (its content does not matter here).
    student = common_pb2.SignedEnvelope(body=b"Ana Nunez 2011-04-02 SSID 1234567890")

    def submit_as_a() -> common_pb2.SignedEnvelope:
        peers = PeerClients(a.identity.tls, directory)  # exactly what A's server dials with
        try:
            return peers.stub(B).SubmitRequest(student, timeout=RPC_TIMEOUT)
        finally:
            peers.close()

    try:
        # The impostor: C's own valid certificate and key, listening where B's entry points.
        ears = RecordingPeer()
        impostor = serve_at(b_endpoint, c.identity.tls, ears)
        try:
            refused(submit_as_a, grpc.StatusCode.UNAVAILABLE)  # the handshake fails
            assert ears.received == []
            # It is up and answers whoever asks for C: only the name stopped A.
            channel = secure_channel(
                b_endpoint, a.identity.tls.channel_credentials(), district_server_name(C)
            )
            try:
                peer_pb2_grpc.DistrictPeerStub(channel).SubmitRequest(
                    common_pb2.SignedEnvelope(), timeout=RPC_TIMEOUT
                )
            finally:
                channel.close()
            assert len(ears.received) == 1 and ears.received[0].body == b""
        finally:
            impostor.stop(None).wait()

        # The control: the same server with B's real certificate is reached.
        b_servicer = RecordingPeer()
        real = serve_at(b_endpoint, b.identity.tls, b_servicer)
        try:
            assert submit_as_a().signer_district == "whoever"
            assert [e.body for e in b_servicer.received] == [student.body]
        finally:
            real.stop(None).wait()
    finally:
        directory_channel.close()
