"""``rt enroll``: bind a district's freshly generated keys to its code at the registry.

The district generates its TLS, HPKE and signing keys locally; only public
halves and a CSR travel, over server-authenticated TLS to the registry's
enrollment port, together with the one-time authorization code. Before
anything is written, the answer is checked: the certificate must be for our
key and our district and chain to the pinned registry CA, and the directory
entry must verify against the pinned registry signing key and carry exactly
our keys. Only then are the keys saved and the TOML config written, so a
refused enrollment leaves no file behind.

The new keys are written to ``pending-keys/`` before the registry is asked
(``rt_client.keystore``): a run that dies after the registry's answer but
before saving it is finished by running ``rt enroll`` again with the same
settings (the same keys are sent, and the registry answers again without
consuming a code). Key rotation is ``rt_client.rotation``.
"""

from __future__ import annotations

import argparse
import getpass
import hmac
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from protos.rt.v1 import registry_pb2, registry_pb2_grpc
from rt_client.config import DistrictConfig, load_config, write_config
from rt_client.crypto.hpke import DEFAULT_SUITE, HpkeSuite
from rt_client.directory import (
    Clock,
    DirectoryEntry,
    utc_now,
    verify_entry,
)
from rt_client.errors import (
    ConfigError,
    InvalidInput,
    PeerAuthError,
    RecordsTransferError,
    RegistryError,
)
from rt_client.identity import (
    CA_FILE,
    DistrictKeys,
    generate_keys,
    has_identity,
    load_identity,
    save_enrollment,
)
from rt_client.ids import DistrictCode
from rt_client.keystore import clear_pending, load_pending, save_pending
from rt_client.status_codes import Remote, error_from_rpc
from rt_client.tls import (
    REGISTRY_SERVER_NAME,
    district_of_certificate,
    district_server_name,
    server_only_channel,
    spki_sha256,
)

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "add_enroll_parser",
    "enroll_command",
    "check_answer",
    "enroll_district",
    "registry_call",
]

DEFAULT_CONFIG_NAME: Final = "district.toml"
_AUTH_CODE_ENV: Final = "RT_AUTH_CODE"
_DEFAULT_TIMEOUT: Final = 30.0


def enroll_district(
    *,
    code: str,
    authorization_code: str,
    registry_address: str,
    registry_enroll_address: str,
    registry_ca_pem: bytes,
    registry_signing_key: str,
    endpoints: Sequence[str],
    data_dir: Path,
    peer_listen: str | None = None,
    config_path: Path | None = None,
    replace_existing: bool = False,
    registry_server_name: str = REGISTRY_SERVER_NAME,
    hpke_suite: HpkeSuite = DEFAULT_SUITE,
    clock: Clock = utc_now,
    timeout: float = _DEFAULT_TIMEOUT,
    **config_fields: Any,
) -> DistrictConfig:
    """Enroll district ``code`` and return its config (also written to ``config_path``).

    ``peer_listen`` defaults to the first endpoint; ``config_path`` to
    ``data_dir/district.toml``; ``config_fields`` are further ``DistrictConfig``
    fields (``database_url``, ``directory_ttl_seconds``, ...).

    Raises ``ConfigError`` (bad settings, or ``data_dir`` already enrolled and
    not ``replace_existing``), ``EnrollmentRefused`` (wrong or used code, or
    locked out), ``PeerUnavailable`` (registry unreachable), ``RegistryError``
    (the registry refused the keys or answered with something that does not
    verify). Nothing is written unless enrollment succeeds.
    """
    data_dir = Path(data_dir).absolute()
    endpoint_list = list(endpoints)
    if not endpoint_list:
        raise ConfigError("give at least one --endpoint (host:port other districts will dial)")
    try:
        config = DistrictConfig(
            district_code=DistrictCode(code),
            data_dir=data_dir,
            peer_listen=peer_listen or endpoint_list[0],
            advertised_endpoints=tuple(endpoint_list),
            registry_address=registry_address,
            registry_enroll_address=registry_enroll_address,
            registry_ca_path=data_dir / CA_FILE,
            registry_signing_key=registry_signing_key,
            registry_server_name=registry_server_name,
            **config_fields,
        )
    except TypeError as exc:
        raise ConfigError(f"unknown district setting: {exc}") from exc
    pinned_ca = load_ca(registry_ca_pem)
    if has_identity(data_dir) and not replace_existing:
        raise ConfigError(
            f"{data_dir} already holds an enrolled district; to enroll again with a new "
            "authorization code (this replaces every key), pass --replace"
        )
    existed = data_dir.exists()
    pending = load_pending(data_dir, config.district_code)
    if pending is not None and pending.endpoints == config.advertised_endpoints:
        keys = pending  # an earlier run died after asking: ask again with the same keys
    else:
        try:
            keys = generate_keys(config.district_code, config.advertised_endpoints, hpke_suite)
        except InvalidInput as exc:
            raise ConfigError(str(exc)) from exc
        save_pending(data_dir, keys)

    try:
        request = registry_pb2.EnrollRequest(
            district_code=config.district_code,
            authorization_code=authorization_code.strip(),
            keys=keys.to_proto(),
        )
        with server_only_channel(
            registry_enroll_address, registry_ca_pem, registry_server_name
        ) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            response = registry_call(
                lambda: stub.Enroll(request, timeout=timeout),
                registry_enroll_address,
                enrolling=True,
            )

        check_answer(response, keys, pinned_ca, config, clock())
    except RecordsTransferError:
        # Refused, unreachable, or an answer that is not ours: nothing is kept
        # (only a process that dies keeps its pending keys, to ask again).
        clear_pending(data_dir)
        if not existed and not any(data_dir.iterdir()):
            data_dir.rmdir()
        raise
    _crash_point("enroll-answered")
    save_enrollment(
        data_dir, keys, bytes(response.certificate_pem), registry_ca_pem, response.entry
    )
    write_config(config, config_path or data_dir / DEFAULT_CONFIG_NAME)
    clear_pending(data_dir)
    return config


def _crash_point(name: str) -> None:
    """Die here, as a power cut would, when ``RT_TEST_CRASH_AT`` names this point (tests)."""
    if os.environ.get("RT_TEST_CRASH_AT") == name:
        os._exit(99)


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.DNSName))


def load_ca(ca_pem: bytes) -> x509.Certificate:
    try:
        certs = x509.load_pem_x509_certificates(bytes(ca_pem))
    except ValueError as exc:
        raise ConfigError("the registry CA file is not a PEM certificate") from exc
    if len(certs) != 1:
        raise ConfigError("the registry CA file must hold exactly one certificate")
    return certs[0]


# How the registry's refusals read to the person enrolling (rt_client.status_codes).
_REGISTRY: Final = Remote(
    refusal=RegistryError,
    refused="the registry failed the request ({code})",
    unreachable=(
        "cannot reach the registry at {address} ({code}); check the address and "
        "that the registry CA file is the registry's own"
    ),
    not_authorized=("the registry refused this district's certificate (revoked, or rotated away?)"),
    invalid="the registry rejected the request: {details}",
)

# Only an enrollment's refusal: on the mutual-TLS listener UNAUTHENTICATED is the certificate.
_ENROLLMENT_REFUSED: Final = (
    "the registry refused the enrollment: the authorization code is wrong or was "
    "already used, or this machine's address made too many failed attempts and is "
    "locked out for a while (15 minutes by default, longer after repeated lockouts). "
    "Check the code and try again later; if it is still refused, ask the registry "
    "operator for a new code (`rt-registry district rotate-code`)."
)


def registry_call(call: Any, address: str, *, enrolling: bool) -> registry_pb2.EnrollResponse:
    """Run one registry call.

    Raises ``EnrollmentRefused``, ``RegistryError`` or ``PeerUnavailable``.
    """
    try:
        response: registry_pb2.EnrollResponse = call()
    except grpc.RpcError as exc:
        escaped = address.replace("{", "{{").replace("}", "}}")  # a template, not a text
        remote = replace(
            _REGISTRY,
            unreachable=_REGISTRY.unreachable.replace("{address}", escaped),
            unauthenticated=_ENROLLMENT_REFUSED if enrolling else None,
        )
        raise error_from_rpc(exc, remote) from exc
    return response


def check_answer(
    response: registry_pb2.EnrollResponse,
    keys: DistrictKeys,
    pinned_ca: x509.Certificate,
    config: DistrictConfig,
    now: datetime,
) -> DirectoryEntry:
    """Refuse an answer that is not exactly our enrollment. Raises ``RegistryError``."""
    bad = "the registry's answer does not match this enrollment"
    try:
        returned_ca = load_ca(bytes(response.ca_certificate_pem))
        cert = x509.load_pem_x509_certificate(bytes(response.certificate_pem))
    except (ConfigError, ValueError) as exc:
        raise RegistryError(f"{bad}: malformed certificate") from exc
    if returned_ca != pinned_ca:
        raise RegistryError(f"{bad}: it names a different CA than the pinned registry CA")
    try:
        cert.verify_directly_issued_by(pinned_ca)
    except (ValueError, TypeError) as exc:
        raise RegistryError(f"{bad}: the certificate is not issued by the registry CA") from exc
    ours = keys.tls_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ours != theirs:
        raise RegistryError(f"{bad}: the certificate is for another key")
    try:
        if district_of_certificate(cert) != keys.code:
            raise RegistryError(f"{bad}: the certificate names another district")
    except PeerAuthError as exc:
        raise RegistryError(f"{bad}: {exc}") from exc
    # Other districts check this name when they dial us: without it none could reach us.
    if district_server_name(keys.code) not in _dns_names(cert):
        raise RegistryError(f"{bad}: the certificate does not carry this district's server name")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise RegistryError(
            f"{bad}: the certificate is not valid now (check this computer's clock)"
        )
    entry = verify_entry(
        response.entry, config.registry_signing_key_bytes, now, expected_code=keys.code
    )
    suite = keys.hpke_key.suite
    checks = [
        entry.is_active,
        hmac.compare_digest(entry.tls_spki_sha256, spki_sha256(cert)),
        (entry.hpke_kem, entry.hpke_kdf, entry.hpke_aead) == (suite.kem, suite.kdf, suite.aead),
        entry.hpke_public_key == keys.hpke_key.public_key().public_bytes(),
        entry.signing_public_key == keys.signing_key.public_key().public_bytes_raw(),
        entry.endpoints == tuple(config.advertised_endpoints),
    ]
    if not all(checks):
        raise RegistryError(f"{bad}: the directory entry does not carry this district's keys")
    return entry


# -- CLI -------------------------------------------------------------------------


def add_enroll_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Mount ``enroll`` on the ``rt`` CLI's subparsers (``func`` is set to ``enroll_command``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "enroll",
        help="enroll this district at the registry (generates keys, writes the config)",
        description=(
            "Generate this district's TLS, HPKE and signing keys locally, bind them to the "
            "district code at the registry with the one-time authorization code, and write the "
            "district's TOML config. Private keys never leave this machine. Nothing is written "
            "if the registry refuses."
        ),
        epilog=(
            "example: rt enroll --code 1964733 --registry registry.example.org:7443 "
            "--registry-enroll registry.example.org:7444 --registry-ca registry-ca.pem "
            "--registry-key 3b6a...e1 --endpoint rt.lausd.example:7400 --data-dir /var/lib/rt"
        ),
    )
    parser.add_argument("--code", required=True, help="the district's 7-digit county-district code")
    parser.add_argument(
        "--auth-code",
        help=(
            "the one-time authorization code from the registry operator (default: the "
            f"{_AUTH_CODE_ENV} environment variable, else asked for without echo)"
        ),
    )
    parser.add_argument(
        "--registry", required=True, metavar="HOST:PORT", help="the registry's mutual-TLS address"
    )
    parser.add_argument(
        "--registry-enroll",
        required=True,
        metavar="HOST:PORT",
        help="the registry's enrollment address (server-authenticated TLS)",
    )
    parser.add_argument(
        "--registry-ca",
        required=True,
        type=Path,
        metavar="FILE",
        help="the registry CA certificate (PEM)",
    )
    parser.add_argument(
        "--registry-key",
        required=True,
        metavar="HEX",
        help="the registry's Ed25519 signing public key (64 hex digits), pinned in the config",
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="where other districts reach this district's server (repeat for replicas)",
    )
    parser.add_argument(
        "--data-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="where keys are stored (mode 0700)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"where to write the TOML config (default: DATA_DIR/{DEFAULT_CONFIG_NAME})",
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address the peer server binds (default: the first --endpoint)",
    )
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in DATA_DIR)")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="re-enroll a data directory that is already enrolled (replaces every key)",
    )
    parser.set_defaults(func=enroll_command)
    return parser


def enroll_command(args: argparse.Namespace) -> int:
    """Run ``rt enroll``. Returns the exit status.

    Raises the project's errors (``ConfigError``, ``EnrollmentRefused``, ...)
    for the ``rt`` CLI to print as one line and turn into an exit code.
    """
    auth_code = args.auth_code or os.environ.get(_AUTH_CODE_ENV)
    if not auth_code:
        if not sys.stdin.isatty():
            raise ConfigError(f"no authorization code: pass --auth-code or set {_AUTH_CODE_ENV}")
        auth_code = getpass.getpass("Authorization code: ")
    try:
        ca_pem = Path(args.registry_ca).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the registry CA file {args.registry_ca}: {exc.strerror}"
        ) from exc
    extra: dict[str, Any] = {}
    if args.database_url:
        extra["database_url"] = args.database_url
    config = enroll_district(
        code=args.code,
        authorization_code=auth_code,
        registry_address=args.registry,
        registry_enroll_address=args.registry_enroll,
        registry_ca_pem=ca_pem,
        registry_signing_key=args.registry_key,
        endpoints=args.endpoint,
        data_dir=args.data_dir,
        peer_listen=args.listen,
        config_path=args.config,
        replace_existing=args.replace,
        **extra,
    )
    config_path = args.config or config.data_dir / DEFAULT_CONFIG_NAME
    identity = load_identity(config.data_dir)
    load_config(config_path)  # proves the written config reads back
    print(f"District {config.district_code} enrolled.")
    print(f"  keys and certificate: {config.data_dir}")
    print(f"  certificate valid until: {identity.certificate.not_valid_after_utc:%Y-%m-%d}")
    print(f"  config: {config_path}")
    print(f"Start the district server with: rt serve --config {config_path}")
    return 0
