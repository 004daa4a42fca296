"""The registry over real TLS: directory methods, caller identity, storage of codes, the CLI.

Also one servicer-level test through pytest-grpc's fixtures (``grpc_add_to_server``,
``grpc_servicer``, ``grpc_stub_cls``): pytest-grpc serves insecurely, so the
servicer's caller authentication is substituted there.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos.rt.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from registry import cli as registry_cli
from registry.authcode import hash_authorization_code, verify_authorization_code
from registry.ca import RegistryCA
from registry.home import init_home, open_registry
from registry.service import KeySubmission, RegistryService
from registry.servicer import RegistryServicer
from registry.store import RegistryStore
from rt_client.config import RegistryConfig
from rt_client.directory import DistrictStatus, verify_entry
from rt_client.errors import EnrollmentRefused, InvalidInput
from rt_client.identity import generate_keys
from rt_client.ids import DistrictCode
from rt_client.rotation import update_district_entry
from rt_client.tls import REGISTRY_SERVER_NAME, secure_channel, server_only_channel

A, B, C = "1964733", "1111111", "2222222"


@pytest.fixture
def channels() -> Iterator[list[grpc.Channel]]:
    opened: list[grpc.Channel] = []
    yield opened
    for channel in opened:
        channel.close()


def stub_for(registry, district, channels) -> registry_pb2_grpc.RegistryStub:
    channel = secure_channel(
        registry.address, district.identity.tls.channel_credentials(), REGISTRY_SERVER_NAME
    )
    channels.append(channel)
    return registry_pb2_grpc.RegistryStub(channel)


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# -- directory methods ------------------------------------------------------------


def test_lookup_returns_an_entry_whose_signature_verifies(
    registry, enrolled_district, channels
) -> None:
    a, b = enrolled_district(A), enrolled_district(B)
    envelope = stub_for(registry, b, channels).LookupDistrict(
        registry_pb2.LookupDistrictRequest(district_code=A), timeout=5
    )
    entry = verify_entry(envelope, registry.signing_key, registry.clock(), expected_code=A)
    assert entry.is_active and entry.version == 1
    assert entry.tls_spki_sha256 == a.identity.tls.spki_sha256()
    assert entry.signing_public_key == a.identity.signing_key.public_key().public_bytes_raw()
    assert entry.endpoints == a.config.advertised_endpoints
    assert (entry.expires_at - entry.issued_at).days == 7


def test_lookup_of_an_unknown_district_is_not_found(registry, enrolled_district, channels) -> None:
    b = enrolled_district(B)
    err = refused(
        lambda: stub_for(registry, b, channels).LookupDistrict(
            registry_pb2.LookupDistrictRequest(district_code="7777777"), timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_list_districts_returns_every_current_entry(registry, enrolled_district, channels) -> None:
    a, _ = enrolled_district(A), enrolled_district(B)
    registry.add_district(C)  # not enrolled: no entry yet
    reply = stub_for(registry, a, channels).ListDistricts(
        registry_pb2.ListDistrictsRequest(), timeout=5
    )
    codes = sorted(
        verify_entry(e, registry.signing_key, registry.clock()).district_code for e in reply.entries
    )
    assert codes == sorted([A, B])


def test_search_schools_finds_schools_of_active_districts(
    registry, enrolled_district, channels
) -> None:
    a = enrolled_district(
        A, schools=[("19647331932334", "Lincoln High"), ("19647330000002", "Roosevelt Elementary")]
    )
    registry.add_district(C, schools=[("22222220000001", "Lincoln Middle")])  # pending: not listed
    stub = stub_for(registry, a, channels)
    names = [
        s.name
        for s in stub.SearchSchools(
            registry_pb2.SearchSchoolsRequest(query="lincoln"), timeout=5
        ).schools
    ]
    assert names == ["Lincoln High"]
    by_code = stub.SearchSchools(
        registry_pb2.SearchSchoolsRequest(query="1964733000"), timeout=5
    ).schools
    assert [(s.cds_code, s.district_code, s.district_name) for s in by_code] == [
        ("19647330000002", A, f"District {A}")
    ]
    limited = stub.SearchSchools(
        registry_pb2.SearchSchoolsRequest(query="1964733", limit=1), timeout=5
    ).schools
    assert len(limited) == 1
    # LIKE wildcards in the query are literal characters, not patterns.
    assert not stub.SearchSchools(registry_pb2.SearchSchoolsRequest(query="%"), timeout=5).schools
    err = refused(
        lambda: stub.SearchSchools(registry_pb2.SearchSchoolsRequest(query="  "), timeout=5)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- who may call ----------------------------------------------------------------------


def test_each_listener_serves_only_its_methods(registry, enrolled_district, channels) -> None:
    a = enrolled_district(A)
    err = refused(
        lambda: stub_for(registry, a, channels).Enroll(registry_pb2.EnrollRequest(), timeout=5)
    )
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    enroll_channel = server_only_channel(registry.enroll_address, registry.ca_pem)
    channels.append(enroll_channel)
    err = refused(
        lambda: registry_pb2_grpc.RegistryStub(enroll_channel).LookupDistrict(
            registry_pb2.LookupDistrictRequest(district_code=A), timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_directory_listener_requires_a_client_certificate(registry, channels) -> None:
    channel = secure_channel(
        registry.address, grpc.ssl_channel_credentials(registry.ca_pem), REGISTRY_SERVER_NAME
    )
    channels.append(channel)
    err = refused(
        lambda: registry_pb2_grpc.RegistryStub(channel).ListDistricts(
            registry_pb2.ListDistrictsRequest(), timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.UNAVAILABLE  # refused in the handshake


def test_a_revoked_district_is_refused_and_published_as_revoked(
    registry, enrolled_district, channels
) -> None:
    a, b = enrolled_district(A), enrolled_district(B)
    assert registry.service.revoke(A)
    err = refused(
        lambda: stub_for(registry, a, channels).ListDistricts(
            registry_pb2.ListDistrictsRequest(), timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == "not authorized"
    envelope = stub_for(registry, b, channels).LookupDistrict(
        registry_pb2.LookupDistrictRequest(district_code=A), timeout=5
    )
    entry = verify_entry(envelope, registry.signing_key, registry.clock())
    assert entry.status is DistrictStatus.REVOKED and entry.version == 2
    assert not registry.service.revoke(A)  # idempotent


def test_update_entry_rotates_the_key_and_refuses_the_old_certificate(
    registry, enrolled_district, channels
) -> None:
    a = enrolled_district(A)
    old_stub = stub_for(registry, a, channels)
    identity = update_district_entry(a.config, rotate_tls_key=True, clock=registry.clock)
    entry = verify_entry(identity.entry, registry.signing_key, registry.clock())
    assert entry.version == 2 and entry.tls_spki_sha256 == identity.tls.spki_sha256()
    assert entry.tls_spki_sha256 != a.identity.tls.spki_sha256()
    assert (
        entry.signing_public_key == a.identity.signing_key.public_key().public_bytes_raw()
    )  # kept
    err = refused(lambda: old_stub.ListDistricts(registry_pb2.ListDistrictsRequest(), timeout=5))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    new_channel = secure_channel(
        registry.address, identity.tls.channel_credentials(), REGISTRY_SERVER_NAME
    )
    channels.append(new_channel)
    assert (
        registry_pb2_grpc.RegistryStub(new_channel)
        .ListDistricts(registry_pb2.ListDistrictsRequest(), timeout=5)
        .entries
    )


def test_update_entry_changes_endpoints_with_a_new_certificate_for_the_same_key(
    registry, enrolled_district
) -> None:
    a = enrolled_district(A)
    identity = update_district_entry(a.config, endpoints=["localhost:7999"], clock=registry.clock)
    entry = verify_entry(identity.entry, registry.signing_key, registry.clock())
    assert entry.endpoints == ("localhost:7999",)
    assert identity.tls.spki_sha256() == a.identity.tls.spki_sha256()
    # The certificate names the district, never its endpoint hosts.
    san = identity.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(san.value) == [
        x509.UniformResourceIdentifier(f"spiffe://records-transfer/district/{A}"),
        x509.DNSName(f"{A}.district.records-transfer.internal"),
    ]


def test_update_entry_for_another_district_is_refused_and_changes_nothing(
    registry, enrolled_district, channels
) -> None:
    a, _ = enrolled_district(A), enrolled_district(B)
    before = registry.service.lookup(B)
    keys = generate_keys(B, ["127.0.0.1:7001"])
    err = refused(
        lambda: stub_for(registry, a, channels).UpdateEntry(
            registry_pb2.UpdateEntryRequest(district_code=B, keys=keys.to_proto()), timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert registry.service.lookup(B) == before


def test_a_district_certificate_may_not_name_the_registry(registry) -> None:
    auth = registry.add_district(A)
    keys = generate_keys(A, [f"{REGISTRY_SERVER_NAME}:7444"])
    with pytest.raises(InvalidInput, match="reserved for the registry"):
        registry.service.enroll(
            A, auth, KeySubmission.from_proto(keys.to_proto()), source="192.0.2.1"
        )
    assert registry.service.districts_overview()[0].status == "pending"


# -- authorization codes at rest --------------------------------------------------------


def _all_cells(database_url: str) -> list[object]:
    """Every cell of every table of the registry's database (SQLite or PostgreSQL)."""
    engine = sa.create_engine(database_url)
    try:
        cells: list[object] = []
        with engine.connect() as conn:
            for table in sa.inspect(conn).get_table_names():
                for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                    cells.extend(bytes(c) if isinstance(c, memoryview) else c for c in row)
        return cells
    finally:
        engine.dispose()


def test_stored_authorization_codes_are_not_recoverable(registry) -> None:
    codes = {code: registry.add_district(code) for code in (A, B, C)}
    rotated = registry.service.rotate_code(C)
    raw = b""
    if registry.database_url.startswith("sqlite"):  # the file's bytes, free pages and all
        db = registry.home / "registry.db"
        raw = db.read_bytes() + (
            db.with_name("registry.db-wal").read_bytes()
            if db.with_name("registry.db-wal").exists()
            else b""
        )
    cells = _all_cells(registry.database_url)
    for secret in [*codes.values(), rotated]:
        assert secret.encode() not in raw
        assert not any(
            secret in str(cell) or secret.encode() in (cell if isinstance(cell, bytes) else b"")
            for cell in cells
        )
    hashes = [c for c in cells if isinstance(c, str) and c.startswith("scrypt$")]
    assert len(hashes) == 3  # A, B and C's rotated code; C's first code is gone
    salts = set()
    for stored in hashes:
        scheme, n, r, p, salt, digest = stored.split("$")
        assert (scheme, int(r), int(p)) == ("scrypt", 8, 1) and int(n) >= 2
        salts.add(salt)
        assert len(base64.b64decode(salt)) == 16
    assert len(salts) == 3  # a fresh salt per code
    assert any(verify_authorization_code(codes[A], h) for h in hashes)
    assert not any(verify_authorization_code(codes[C], h) for h in hashes)  # rotated away


def test_authorization_code_hashes_are_salted_and_verify_in_constant_time_api() -> None:
    one, two = hash_authorization_code("same code", 16), hash_authorization_code("same code", 16)
    assert one != two
    assert verify_authorization_code("same code", one) and verify_authorization_code(
        "same code", two
    )
    assert not verify_authorization_code("same codf", one)
    assert not verify_authorization_code("same code", "garbage")


# -- rt-registry ---------------------------------------------------------------------------


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    status = registry_cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_the_cli_manages_districts(tmp_path: Path, capsys, monkeypatch) -> None:
    home = tmp_path / "reg"
    status, out, _ = run_cli(
        "init",
        str(home),
        "--listen",
        "127.0.0.1:0",
        "--enroll-listen",
        "127.0.0.1:0",
        capsys=capsys,
    )
    assert status == 0 and re.search(r"--registry-key\): [0-9a-f]{64}", out)
    monkeypatch.setenv("RT_REGISTRY_HOME", str(home))
    status, out, _ = run_cli(
        "district",
        "add",
        "--code",
        A,
        "--name",
        "Los Angeles Unified",
        "--school",
        "19647331932334:Lincoln High",
        "--json",
        capsys=capsys,
    )
    assert status == 0
    code = json.loads(out)["authorization_code"]
    assert len(code) >= 43
    status, out, _ = run_cli("district", "list", "--json", capsys=capsys)
    [row] = json.loads(out)
    assert (row["code"], row["status"], row["authorization_code_outstanding"]) == (
        A,
        "pending",
        True,
    )
    assert code not in out
    status, out, _ = run_cli("district", "list", capsys=capsys)
    assert status == 0 and A in out and "pending" in out
    status, out, _ = run_cli("--home", str(home), "district", "rotate-code", A, capsys=capsys)
    assert status == 0 and "shown once" in out
    status, out, _ = run_cli("district", "revoke", A, "--home", str(home), capsys=capsys)
    assert status == 0 and "revoked" in out


def test_district_list_shows_failed_attempts_and_the_last_lockout(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    home = tmp_path / "reg"
    init_home(home, listen="127.0.0.1:0", enroll_listen="127.0.0.1:0", scrypt_n=16)
    monkeypatch.setenv("RT_REGISTRY_HOME", str(home))
    _, service, _ = open_registry(home)
    service.add_district(A, "Los Angeles Unified", [])
    keys = KeySubmission.from_proto(generate_keys(A, ["127.0.0.1:7401"]).to_proto())
    for source in ["198.51.100.7"] * 5 + ["198.51.100.8"]:  # the 5th locks its source out
        with pytest.raises(EnrollmentRefused):
            service.enroll(A, "wrong", keys, source=source)
    status, out, _ = run_cli("district", "list", "--json", capsys=capsys)
    [row] = json.loads(out)
    assert status == 0 and row["failed_attempts"] == 6 and row["last_lockout_at"]
    status, out, _ = run_cli("district", "list", capsys=capsys)
    assert status == 0 and "6 failed" in out and "last lockout" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["district", "add", "--code", "123", "--name", "x"], "not a district code"),
        (
            ["district", "add", "--code", A, "--name", "x", "--school", "nocolon"],
            'CDS:"School name"',
        ),
        (
            ["district", "add", "--code", A, "--name", "x", "--school", "11111110000001:Elsewhere"],
            "does not belong",
        ),
        (["district", "revoke", "7777777"], "not registered"),
        (["district", "rotate-code", "7777777"], "not registered"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(
    tmp_path: Path, capsys, monkeypatch, args, message
) -> None:
    home = tmp_path / "reg"
    run_cli("init", str(home), capsys=capsys)
    monkeypatch.setenv("RT_REGISTRY_HOME", str(home))
    status, _, err = run_cli(*args, capsys=capsys)
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("rt-registry: error: ") and message in err
    assert "Traceback" not in err


def test_cli_without_a_home_says_what_to_do(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RT_REGISTRY_HOME", raising=False)
    status, _, err = run_cli("district", "list", capsys=capsys)
    assert status == 1 and "--home" in err
    status, _, err = run_cli("--home", str(tmp_path), "district", "list", capsys=capsys)
    assert status == 1 and "rt-registry init" in err


def test_cli_init_refuses_an_existing_registry(tmp_path: Path, capsys) -> None:
    run_cli("init", str(tmp_path / "reg"), capsys=capsys)
    status, _, err = run_cli("init", str(tmp_path / "reg"), capsys=capsys)
    assert status == 1 and "already holds a registry" in err


def test_every_cli_command_has_help(capsys) -> None:
    for args in (
        ["--help"],
        ["init", "--help"],
        ["district", "--help"],
        ["district", "add", "--help"],
        ["district", "list", "--help"],
        ["district", "revoke", "--help"],
        ["district", "rotate-code", "--help"],
        ["serve", "--help"],
        ["info", "--help"],
    ):
        with pytest.raises(SystemExit) as info:
            registry_cli.main(args)
        assert info.value.code == 0
        assert "usage: rt-registry" in capsys.readouterr().out


# -- the servicer alone, through pytest-grpc -----------------------------------------------


@pytest.fixture(scope="module")
def grpc_add_to_server():
    return registry_pb2_grpc.add_RegistryServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("servicer")
    config = RegistryConfig(data_dir=folder, scrypt_n=16)
    store = RegistryStore.open(config.database_url)
    service = RegistryService(store, RegistryCA.create(), Ed25519PrivateKey.generate(), config)
    auth = service.add_district(
        A,
        "Los Angeles Unified",
        [("19647331932334", "Lincoln High"), ("19647330000002", "Garfield High")],
    )
    keys = generate_keys(A, ["127.0.0.1:7001"])
    service.enroll(A, auth, KeySubmission.from_proto(keys.to_proto()), source="192.0.2.1")
    # pytest-grpc serves without TLS: stand in for the certificate check.
    return RegistryServicer(service, caller_auth=lambda context: DistrictCode(A))


@pytest.fixture(scope="module")
def grpc_stub_cls(grpc_channel):
    return registry_pb2_grpc.RegistryStub


def test_search_schools_servicer(grpc_stub) -> None:
    reply = grpc_stub.SearchSchools(registry_pb2.SearchSchoolsRequest(query="high"), timeout=5)
    assert [(s.name, s.district_code) for s in reply.schools] == [
        ("Garfield High", A),
        ("Lincoln High", A),
    ]
    with pytest.raises(grpc.RpcError) as info:
        grpc_stub.SearchSchools(registry_pb2.SearchSchoolsRequest(query="x" * 101), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_lookup_servicer_returns_the_signed_entry(grpc_stub) -> None:
    envelope = grpc_stub.LookupDistrict(
        registry_pb2.LookupDistrictRequest(district_code=A), timeout=5
    )
    assert (
        isinstance(envelope, common_pb2.SignedEnvelope) and envelope.signer_district == "registry"
    )


# -- the CA, the listeners' standard services, entry refresh -----------------------------------


def test_the_ca_refuses_a_csr_asking_for_another_identity() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca = RegistryCA.create()
    key = ec.generate_private_key(ec.SECP256R1())
    for uris in (["spiffe://records-transfer/district/1111111"], ["https://evil.example/"]):
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, A)]))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        with pytest.raises(InvalidInput, match="URI other than"):
            ca.issue_district_certificate(csr, A, dt.timedelta(days=1))
    # What it does issue: exactly one URI SAN, plus the district's own server name.
    csr = generate_keys(A, ["rt.lausd.example:7400", "10.1.2.3:7400"]).csr
    cert = ca.issue_district_certificate(csr, A, dt.timedelta(days=1))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://records-transfer/district/{A}"
    ]
    assert san.get_values_for_type(x509.DNSName) == [f"{A}.district.records-transfer.internal"]
    assert san.get_values_for_type(x509.IPAddress) == []
    cert.verify_directly_issued_by(ca.certificate)


def test_both_listeners_serve_health_and_reflection(registry, enrolled_district, channels) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    a = enrolled_district(A)
    mtls = secure_channel(
        registry.address, a.identity.tls.channel_credentials(), REGISTRY_SERVER_NAME
    )
    enroll = server_only_channel(registry.enroll_address, registry.ca_pem)
    channels.extend([mtls, enroll])
    for channel in (mtls, enroll):
        for service in ("", "rt.v1.Registry"):
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
        assert "rt.v1.Registry" in names and "grpc.health.v1.Health" in names


def test_entries_are_re_signed_before_they_expire(registry, enrolled_district) -> None:
    a = enrolled_district(A)
    first = verify_entry(registry.service.lookup(A), registry.signing_key, registry.clock())
    registry.clock.advance(3 * 86400)  # more than half of the 7 days left: unchanged
    assert registry.service.lookup(A).body == a.identity.entry.body
    registry.clock.advance(86400 + 60)  # less than half left: a new version, same keys
    second = verify_entry(registry.service.lookup(A), registry.signing_key, registry.clock())
    assert second.version == first.version + 1
    assert second.expires_at - registry.clock() == dt.timedelta(days=7)
    assert second.tls_spki_sha256 == first.tls_spki_sha256
    assert second.hpke_public_key == first.hpke_public_key
    assert registry.service.lookup(A).body == registry.service.lookup(A).body  # stable again


def test_registry_private_keys_are_private(tmp_path: Path, capsys) -> None:
    home = tmp_path / "reg"
    run_cli("init", str(home), capsys=capsys)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("ca-key.pem", "signing-key.pem", "server-key.pem", "registry.db", "registry.toml"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
