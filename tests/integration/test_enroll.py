"""``rt enroll`` against a real registry: the happy path, every refusal, and what is left on disk.

A refused enrollment must write nothing (no data directory, no config) and
leave the registry's entry for the district as it was.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos.rt.v1 import registry_pb2, registry_pb2_grpc
from registry.ca import RegistryCA
from registry.service import KeySubmission, RegistryService
from registry.store import RegistryStore
from rt_client.config import DistrictConfig, RegistryConfig, load_config, write_config
from rt_client.directory import verify_entry
from rt_client.enroll import add_enroll_parser, enroll_district
from rt_client.errors import (
    ConfigError,
    DirectoryError,
    EnrollmentRefused,
    PeerUnavailable,
    RegistryError,
)
from rt_client.identity import KEY_FILES, generate_keys, load_identity
from rt_client.tls import server_only_channel

A, B = "1964733", "1111111"


def enroll(registry, data_dir: Path, auth_code: str, code: str = A, **overrides):
    settings = dict(
        code=code,
        authorization_code=auth_code,
        **registry.enroll_settings(),
        endpoints=["127.0.0.1:7401"],
        data_dir=data_dir,
    )
    settings.update(overrides)
    return enroll_district(**settings)


def registry_state(registry, code: str = A):
    row = next(r for r in registry.service.districts_overview() if r.code == code)
    return (row.status, row.version, row.code_outstanding)


# -- the happy path ---------------------------------------------------------------


def test_enrollment_works(registry, tmp_path: Path) -> None:
    auth = registry.add_district(A, "Los Angeles Unified")
    data_dir = tmp_path / "lausd"
    config = enroll(registry, data_dir, auth, peer_listen="127.0.0.1:0")

    # The files: private keys 0600 in a 0700 directory.
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in KEY_FILES:
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600
    # The config reads back as written, paths relative to its folder.
    assert load_config(data_dir / "district.toml") == config
    assert config.registrar_socket == data_dir / "registrar.sock"
    assert config.database_url == f"sqlite:///{data_dir / 'district.db'}"
    assert 'data_dir = "."' in (data_dir / "district.toml").read_text()

    identity = load_identity(data_dir)
    assert identity.code == A
    cert = identity.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://records-transfer/district/{A}"
    ]
    # Its server name is the district's own, not its endpoint's host (127.0.0.1).
    assert san.get_values_for_type(x509.DNSName) == [f"{A}.district.records-transfer.internal"]
    assert san.get_values_for_type(x509.IPAddress) == []
    entry = verify_entry(identity.entry, registry.signing_key, registry.clock(), expected_code=A)
    assert entry.tls_spki_sha256 == identity.tls.spki_sha256()
    assert entry.hpke_public_key == identity.hpke_key.public_key().public_bytes()
    assert entry.name == "Los Angeles Unified" and entry.endpoints == ("127.0.0.1:7401",)
    assert registry_state(registry) == ("active", 1, False)  # the code is consumed


def test_the_authorization_code_is_single_use(registry, tmp_path: Path) -> None:
    auth = registry.add_district(A)
    enroll(registry, tmp_path / "first", auth)
    with pytest.raises(EnrollmentRefused):
        enroll(registry, tmp_path / "second", auth)
    assert not (tmp_path / "second").exists()
    assert registry_state(registry) == ("active", 1, False)


def test_re_enrollment_with_a_rotated_code_replaces_the_keys(registry, tmp_path: Path) -> None:
    auth = registry.add_district(A)
    data_dir = tmp_path / "lausd"
    enroll(registry, data_dir, auth)
    first = load_identity(data_dir)
    new_auth = registry.service.rotate_code(A)
    with pytest.raises(ConfigError, match="--replace"):
        enroll(registry, data_dir, new_auth)
    enroll(registry, data_dir, new_auth, replace_existing=True)
    second = load_identity(data_dir)
    assert second.tls.spki_sha256() != first.tls.spki_sha256()
    entry = verify_entry(second.entry, registry.signing_key, registry.clock())
    assert entry.version == 2 and entry.tls_spki_sha256 == second.tls.spki_sha256()


def test_a_revoked_district_can_come_back_only_through_a_new_code(registry, tmp_path: Path) -> None:
    auth = registry.add_district(A)
    enroll(registry, tmp_path / "a", auth)
    registry.service.revoke(A)
    assert registry_state(registry) == ("revoked", 2, False)
    new_auth = registry.service.rotate_code(A)
    enroll(registry, tmp_path / "b", new_auth)
    assert registry_state(registry) == ("active", 3, False)


# -- refusals --------------------------------------------------------------------


def test_a_wrong_authorization_code_is_refused_and_writes_nothing(registry, tmp_path: Path) -> None:
    registry.add_district(A)
    before = registry_state(registry)
    data_dir = tmp_path / "lausd"
    with pytest.raises(EnrollmentRefused) as info:
        enroll(registry, data_dir, "not-the-code", config_path=tmp_path / "district.toml")
    message = info.value.diagnostics()
    assert "authorization code is wrong" in message and "rotate-code" in message
    assert not data_dir.exists()
    assert not (tmp_path / "district.toml").exists()
    assert registry_state(registry) == before == ("pending", None, True)


def test_an_existing_empty_data_dir_stays_empty_on_refusal(registry, tmp_path: Path) -> None:
    registry.add_district(A)
    data_dir = tmp_path / "lausd"
    data_dir.mkdir()
    with pytest.raises(EnrollmentRefused):
        enroll(registry, data_dir, "wrong")
    assert list(data_dir.iterdir()) == []


def test_repeated_wrong_codes_lock_out_the_real_client_address_not_the_district(
    registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the real Enroll port: the servicer counts failures under the client's address.

    The test's client is 127.0.0.1, so it is locked out; the district is not: the
    right code from any other address enrolls it.
    """
    auth = registry.add_district(A)
    with caplog.at_level(logging.INFO, logger="registry.service"):
        for _ in range(5):  # the default lockout_threshold
            with pytest.raises(EnrollmentRefused):
                enroll(registry, tmp_path / "x", "wrong")
        # Now even the right code is refused from this address, with the very same answer.
        with pytest.raises(EnrollmentRefused):
            enroll(registry, tmp_path / "x", auth)
    assert not (tmp_path / "x").exists()
    messages = [r.getMessage() for r in caplog.records]
    assert f"enrollment of district {A} from 127.0.0.1 refused: wrong authorization code" in (
        "\n".join(messages)
    )
    assert any("source 127.0.0.1 now locked out of this district" in m for m in messages)
    assert "from 127.0.0.1 refused: the source is locked out" in messages[-1]
    row = registry.service.districts_overview()[0]
    # The attempt while locked was not counted.
    assert row.last_lockout_at is not None and row.failed_attempts == 5
    assert registry_state(registry) == ("pending", None, True)
    # The district's own staff, elsewhere, enroll with the right code.
    keys = KeySubmission.from_proto(generate_keys(A, ["127.0.0.1:7401"]).to_proto())
    assert registry.service.enroll(A, auth, keys, source="192.0.2.10").certificate_pem
    assert registry_state(registry) == ("active", 1, False)


def test_refusals_look_the_same_whatever_the_reason(registry, tmp_path: Path) -> None:
    """Wrong code, unknown district, locked district, consumed code: one status, one detail."""
    auth = registry.add_district(A)
    keys = generate_keys(A, ["127.0.0.1:7401"]).to_proto()
    channel = server_only_channel(registry.enroll_address, registry.ca_pem)
    stub = registry_pb2_grpc.RegistryStub(channel)

    def answer(code: str, auth_code: str) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as info:
            stub.Enroll(
                registry_pb2.EnrollRequest(
                    district_code=code, authorization_code=auth_code, keys=keys
                ),
                timeout=5,
            )
        return info.value.code(), info.value.details()

    try:
        answers = {answer(A, "wrong"), answer("7777777", auth)}
        for _ in range(5):
            answer(A, "wrong")
        answers.add(answer(A, auth))  # locked
        enroll(registry, tmp_path / "b", registry.add_district(B), code=B)
        answers.add(answer(B, "anything"))  # consumed
        assert answers == {(grpc.StatusCode.UNAUTHENTICATED, "enrollment refused")}
    finally:
        channel.close()


def test_the_lockout_ends_after_lockout_seconds(tmp_path: Path) -> None:
    """At the service level, with clocks: the lock ends; attempts while locked do not extend it."""
    from datetime import UTC, datetime

    now = [datetime(2026, 3, 1, tzinfo=UTC)]
    ticks = [0.0]

    def advance(seconds: float) -> None:
        now[0] += timedelta(seconds=seconds)
        ticks[0] += seconds

    config = RegistryConfig(data_dir=tmp_path, scrypt_n=16, lockout_threshold=3, lockout_seconds=60)
    service = RegistryService(
        RegistryStore.open(config.database_url),
        RegistryCA.create(now=now[0]),
        Ed25519PrivateKey.generate(),
        config,
        clock=lambda: now[0],
        monotonic=lambda: ticks[0],
    )
    auth = service.add_district(A, "LAUSD", [])
    keys = KeySubmission.from_proto(generate_keys(A, ["127.0.0.1:7401"]).to_proto())
    source = "192.0.2.10"
    for _ in range(3):
        with pytest.raises(EnrollmentRefused):
            service.enroll(A, "wrong", keys, source=source)
    advance(50)
    with pytest.raises(EnrollmentRefused):
        service.enroll(A, "wrong", keys, source=source)  # while locked: not counted, no extension
    with pytest.raises(EnrollmentRefused):
        service.enroll(A, auth, keys, source=source)  # the right code, still locked
    assert service.districts_overview()[0].failed_attempts == 3
    advance(10)  # lockout_seconds after the lock began
    assert service.enroll(A, auth, keys, source=source).certificate_pem


def test_an_answer_signed_by_another_key_is_refused_and_nothing_is_written(
    registry, tmp_path: Path
) -> None:
    auth = registry.add_district(A)
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    with pytest.raises(DirectoryError, match="pinned registry key"):
        enroll(registry, tmp_path / "x", auth, registry_signing_key=other)
    assert not (tmp_path / "x").exists()


def test_a_registry_with_another_ca_is_not_trusted(registry, tmp_path: Path) -> None:
    auth = registry.add_district(A)
    other_ca = RegistryCA.create("Impostor CA").certificate_pem
    with pytest.raises(PeerUnavailable, match="registry CA file"):
        enroll(registry, tmp_path / "x", auth, registry_ca_pem=other_ca)
    assert not (tmp_path / "x").exists()
    assert registry_state(registry) == ("pending", None, True)  # nothing reached it


def test_endpoints_the_registry_rejects_are_reported(registry, tmp_path: Path) -> None:
    auth = registry.add_district(A)
    with pytest.raises(RegistryError, match="reserved for the registry"):
        enroll(
            registry, tmp_path / "x", auth, endpoints=["registry.records-transfer.internal:7400"]
        )
    with pytest.raises(RegistryError, match="valid host name"):
        enroll(registry, tmp_path / "x", auth, endpoints=["*.evil.example:7400"])
    assert not (tmp_path / "x").exists()
    assert registry_state(registry) == ("pending", None, True)  # the code was not consumed


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"code": "12345"}, "district_code"),
        ({"endpoints": []}, "--endpoint"),
        ({"endpoints": ["no-port"]}, "host:port"),
        ({"registry_signing_key": "abcd"}, "64 hex digits"),
        ({"registry_ca_pem": b"not a pem"}, "not a PEM certificate"),
    ],
)
def test_bad_settings_are_refused_before_contacting_the_registry(
    registry, tmp_path: Path, overrides, message
) -> None:
    registry.add_district(A)
    with pytest.raises(ConfigError, match=message):
        enroll(registry, tmp_path / "x", "whatever", **overrides)
    assert registry.service.districts_overview()[0].failed_attempts == 0


def test_an_unreachable_registry_is_reported(registry, tmp_path: Path) -> None:
    auth = registry.add_district(A)
    with pytest.raises(PeerUnavailable, match="cannot reach the registry"):
        enroll(registry, tmp_path / "x", auth, registry_enroll_address="127.0.0.1:1", timeout=2)


# -- the command line -------------------------------------------------------------


def test_rt_enroll_command(registry, tmp_path: Path, capsys, monkeypatch) -> None:
    auth = registry.add_district(A)
    parser = argparse.ArgumentParser(prog="rt")
    add_enroll_parser(parser.add_subparsers(dest="command"))
    monkeypatch.setenv("RT_AUTH_CODE", auth)
    args = parser.parse_args(
        [
            "enroll",
            "--code",
            A,
            "--registry",
            registry.address,
            "--registry-enroll",
            registry.enroll_address,
            "--registry-ca",
            str(registry.ca_path),
            "--registry-key",
            registry.signing_key_hex,
            "--endpoint",
            "127.0.0.1:7401",
            "--data-dir",
            str(tmp_path / "lausd"),
            "--config",
            str(tmp_path / "etc" / "rt.toml"),
            "--listen",
            "0.0.0.0:7401",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"District {A} enrolled" in out and "rt serve --config" in out
    config = load_config(tmp_path / "etc" / "rt.toml")
    assert config.peer_listen == "0.0.0.0:7401" and config.data_dir == tmp_path / "lausd"
    assert auth not in (tmp_path / "etc" / "rt.toml").read_text()


def test_rt_enroll_help_explains_itself(capsys) -> None:
    parser = argparse.ArgumentParser(prog="rt")
    add_enroll_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["enroll", "--help"])
    out = capsys.readouterr().out
    assert "authorization code" in out and "--registry-key" in out


# -- config files and key files ------------------------------------------------------


def _config(tmp_path: Path, **overrides) -> DistrictConfig:
    settings = dict(
        district_code=A,
        data_dir=tmp_path / "data",
        peer_listen="127.0.0.1:7401",
        advertised_endpoints=("127.0.0.1:7401",),
        registry_address="127.0.0.1:7443",
        registry_enroll_address="127.0.0.1:7444",
        registry_ca_path=tmp_path / "data" / "registry-ca.pem",
        registry_signing_key="ab" * 32,
    )
    settings.update(overrides)
    return DistrictConfig(**settings)


def test_config_round_trips_and_resolves_relative_paths(tmp_path: Path) -> None:
    config = _config(tmp_path, database_url=f"sqlite:///{tmp_path}/elsewhere/x.db")
    write_config(config, tmp_path / "rt.toml")
    assert load_config(tmp_path / "rt.toml") == config
    text = (tmp_path / "rt.toml").read_text()
    assert 'data_dir = "data"' in text and 'database_url = "sqlite:///elsewhere/x.db"' in text
    # Moved with its folder, the config still points inside that folder.
    (tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "rt.toml").write_text(text)
    moved = load_config(tmp_path / "moved" / "rt.toml")
    assert moved.data_dir == tmp_path / "moved" / "data"
    assert moved.registry_ca_path == tmp_path / "moved" / "data" / "registry-ca.pem"
    assert moved.database_url == f"sqlite:///{tmp_path / 'moved' / 'elsewhere' / 'x.db'}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("district_code = \n", "not valid TOML"),
        ('district_code = "1964733"\ncolour = "blue"\n', r"unknown key\(s\) colour"),
        ('district_code = "1964733"\n', r"missing key\(s\)"),
    ],
)
def test_config_errors_name_the_file_and_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "rt.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_config_values_are_checked(tmp_path: Path) -> None:
    write_config(_config(tmp_path), tmp_path / "rt.toml")
    text = (tmp_path / "rt.toml").read_text()
    for old, new, message in [
        ("directory_ttl_seconds = 300", "directory_ttl_seconds = -1", "positive"),
        ("directory_ttl_seconds = 300", 'directory_ttl_seconds = "300"', "whole number"),
        ('peer_listen = "127.0.0.1:7401"', 'peer_listen = "127.0.0.1"', "host:port"),
        ('district_code = "1964733"', 'district_code = "196473"', "district_code"),
    ]:
        (tmp_path / "bad.toml").write_text(text.replace(old, new))
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_a_group_readable_key_file_is_refused(registry, tmp_path: Path) -> None:
    auth = registry.add_district(A)
    data_dir = tmp_path / "lausd"
    enroll(registry, data_dir, auth)
    (data_dir / "tls-key.pem").chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_identity(data_dir)
    (data_dir / "tls-key.pem").chmod(0o600)
    (data_dir / "signing-key.pem").unlink()
    with pytest.raises(ConfigError, match="missing signing-key.pem"):
        load_identity(data_dir)


def test_key_files_are_never_world_readable_even_with_a_lax_umask(registry, tmp_path: Path) -> None:
    auth = registry.add_district(A)
    old = os.umask(0)
    try:
        enroll(registry, tmp_path / "lausd", auth)
    finally:
        os.umask(old)
    for name in KEY_FILES:
        assert stat.S_IMODE((tmp_path / "lausd" / name).stat().st_mode) == 0o600
