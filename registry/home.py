"""The registry's home directory: its config, CA, signing key and server certificate.

Layout (the directory is mode 0700, private keys 0600)::

    registry.toml      RegistryConfig
    ca-key.pem         CA private key
    ca.pem             CA certificate          -> give to every district
    signing-key.pem    Ed25519 entry-signing private key
    server-key.pem     TLS key of the registry's listeners
    server-cert.pem    its certificate (reissued when expiring or when server_hosts change)
    registry.db        the SQLite database (default database_url)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry import migrations
from registry.ca import RegistryCA
from registry.service import RegistryService
from registry.store import RegistryStore
from rt_client.config import RegistryConfig, load_registry_config, write_config
from rt_client.directory import Clock, utc_now
from rt_client.errors import ConfigError, InvalidInput
from rt_client.identity import write_file_atomically
from rt_client.tls import REGISTRY_SERVER_NAME, TlsIdentity

__all__ = [
    "CA_CERT_FILE",
    "CONFIG_FILE",
    "RegistryKeys",
    "init_home",
    "load_keys",
    "open_registry",
]

CONFIG_FILE: Final = "registry.toml"
CA_KEY_FILE: Final = "ca-key.pem"
CA_CERT_FILE: Final = "ca.pem"
SIGNING_KEY_FILE: Final = "signing-key.pem"
SERVER_KEY_FILE: Final = "server-key.pem"
SERVER_CERT_FILE: Final = "server-cert.pem"

_SERVER_CERT_VALIDITY: Final = timedelta(days=397)
_RENEW_BEFORE: Final = timedelta(days=30)


@dataclass(frozen=True)
class RegistryKeys:
    ca: RegistryCA
    signing_key: Ed25519PrivateKey
    server_tls: TlsIdentity  # the listeners' key and certificate, and the CA clients must chain to

    @property
    def signing_public_hex(self) -> str:
        """The pin every district puts in its config (``registry_signing_key``)."""
        return self.signing_key.public_key().public_bytes_raw().hex()

    def __repr__(self) -> str:
        return "RegistryKeys(<keys>)"


def init_home(home: Path, **settings: Any) -> RegistryConfig:
    """Create a registry home: keys, server certificate, config and database schema.

    ``settings`` are ``RegistryConfig`` fields (``listen``, ``server_hosts``, ...).
    Raises ``ConfigError`` if ``home`` already holds a registry or a setting is invalid.
    """
    home = Path(home).absolute()
    if (home / CONFIG_FILE).exists():
        raise ConfigError(f"{home} already holds a registry ({CONFIG_FILE} exists)")
    try:
        config = RegistryConfig(data_dir=home, **settings)
    except TypeError as exc:
        raise ConfigError(f"unknown registry setting: {exc}") from exc
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.chmod(0o700)
        ca = RegistryCA.create()
        write_file_atomically(home / CA_KEY_FILE, ca.key_pem(), 0o600)
        write_file_atomically(home / CA_CERT_FILE, ca.certificate_pem, 0o644)
        signing = Ed25519PrivateKey.generate()
        write_file_atomically(home / SIGNING_KEY_FILE, _private_pem(signing), 0o600)
        server_key = ec.generate_private_key(ec.SECP256R1())
        write_file_atomically(home / SERVER_KEY_FILE, _private_pem(server_key), 0o600)
        _write_server_cert(home, ca, server_key, config)
    except OSError as exc:
        raise ConfigError(f"cannot create the registry in {home}: {exc.strerror or exc}") from exc
    # A SQLite file is created 0600 (it holds the authorization-code hashes).
    store = RegistryStore.open(config.database_url, check_schema=False)
    try:
        migrations.HISTORY.upgrade(store.engine)
    finally:
        store.close()
    write_config(config, home / CONFIG_FILE)
    return config


def load_keys(config: RegistryConfig, clock: Clock = utc_now) -> RegistryKeys:
    """Load the registry's keys; reissue the server certificate if it is due or its names changed.

    Raises ``ConfigError`` for missing, malformed or group/world-readable key files.
    """
    home = config.data_dir
    for name in (CA_KEY_FILE, SIGNING_KEY_FILE, SERVER_KEY_FILE):
        path = home / name
        if not path.is_file():
            raise ConfigError(f"{path} is missing; is {home} a registry home (`rt-registry init`)?")
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path} is readable by other users; fix it with `chmod 600 {path}`")
    try:
        ca = RegistryCA.from_pem(_read(home / CA_KEY_FILE), _read(home / CA_CERT_FILE))
    except InvalidInput as exc:
        raise ConfigError(f"{home}: {exc}") from exc
    signing = _load_private(home / SIGNING_KEY_FILE)
    server_key = _load_private(home / SERVER_KEY_FILE)
    if not isinstance(signing, Ed25519PrivateKey):
        raise ConfigError(f"{home / SIGNING_KEY_FILE} is not an Ed25519 key")
    if not isinstance(server_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{home / SERVER_KEY_FILE} is not an EC key")
    cert_pem = _read(home / SERVER_CERT_FILE) if (home / SERVER_CERT_FILE).exists() else b""
    if not cert_pem or _needs_new_server_cert(cert_pem, server_key, config, clock):
        cert_pem = _write_server_cert(home, ca, server_key, config, clock)
    server_tls = TlsIdentity(
        key_pem=_private_pem(server_key), cert_pem=cert_pem, ca_pem=ca.certificate_pem
    )
    return RegistryKeys(ca=ca, signing_key=signing, server_tls=server_tls)


def open_registry(
    home: Path, clock: Clock = utc_now, **overrides: Any
) -> tuple[RegistryConfig, RegistryService, RegistryKeys]:
    """Load a registry home and build its service. ``overrides`` replace config fields.

    Raises ``ConfigError``.
    """
    config = load_registry_config(Path(home) / CONFIG_FILE)
    if overrides:
        config = replace(config, **overrides)
    keys = load_keys(config, clock)
    store = RegistryStore.open(config.database_url)
    service = RegistryService(store, keys.ca, keys.signing_key, config, clock)
    return config, service, keys


def _needs_new_server_cert(
    cert_pem: bytes, key: ec.EllipticCurvePrivateKey, config: RegistryConfig, clock: Clock
) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return True
    names = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    names |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    wanted = {REGISTRY_SERVER_NAME, *config.server_hosts}
    return (
        cert.public_key() != key.public_key()
        or names != wanted
        or cert.not_valid_after_utc - clock() < _RENEW_BEFORE
    )


def _write_server_cert(
    home: Path,
    ca: RegistryCA,
    key: ec.EllipticCurvePrivateKey,
    config: RegistryConfig,
    clock: Clock = utc_now,
) -> bytes:
    try:
        cert = ca.issue_server_certificate(
            key.public_key(), config.server_hosts, _SERVER_CERT_VALIDITY, clock()
        )
    except InvalidInput as exc:
        raise ConfigError(f"server_hosts: {exc}") from exc
    pem = cert.public_bytes(serialization.Encoding.PEM)
    write_file_atomically(home / SERVER_CERT_FILE, pem, 0o644)
    return pem


def _private_pem(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _load_private(path: Path) -> Any:
    try:
        return serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a PEM private key") from exc
