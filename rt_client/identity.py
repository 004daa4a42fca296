"""A district's key material in its data directory (DESIGN.md section 3, "Enrollment").

Three private keys are generated locally and never leave the district: the TLS
key (EC P-256) with its CSR, the HPKE key pair that record transfers are
encrypted to, and the Ed25519 key that signs every envelope. After enrollment
the data directory also holds the certificate the registry issued, the
registry CA, and the registry-signed directory entry.

Private key files are mode 0600 in a 0700 directory, and every file is written
atomically (temporary file, fsync, rename), so a crash never leaves half a key.
Loading refuses a key file that other users could read.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from google.protobuf.message import DecodeError

from protos.rt.v1 import common_pb2, registry_pb2
from rt_client.crypto.hpke import DEFAULT_SUITE, HpkePrivateKey, HpkeSuite, suite_from_name
from rt_client.errors import ConfigError, InvalidInput, PeerAuthError
from rt_client.ids import DistrictCode, parse_district_code, spiffe_id
from rt_client.tls import (
    TlsIdentity,
    district_of_certificate,
    district_server_name,
    split_host_port,
)

__all__ = [
    "CA_FILE",
    "ENTRY_FILE",
    "HPKE_KEY_FILE",
    "KEY_FILES",
    "SIGNING_KEY_FILE",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "DistrictIdentity",
    "DistrictKeys",
    "endpoint_hosts",
    "generate_keys",
    "has_identity",
    "load_identity",
    "make_csr",
    "save_enrollment",
    "write_file_atomically",
]

TLS_KEY_FILE: Final = "tls-key.pem"
TLS_CERT_FILE: Final = "tls-cert.pem"
CA_FILE: Final = "registry-ca.pem"
HPKE_KEY_FILE: Final = "hpke-key.json"
SIGNING_KEY_FILE: Final = "signing-key.pem"
ENTRY_FILE: Final = "directory-entry.pb"

KEY_FILES: Final = (TLS_KEY_FILE, HPKE_KEY_FILE, SIGNING_KEY_FILE)
_ALL_FILES: Final = (*KEY_FILES, TLS_CERT_FILE, CA_FILE, ENTRY_FILE)


@dataclass(frozen=True)
class DistrictKeys:
    """Freshly generated (or current) private keys of a district, with the CSR for its TLS key."""

    code: DistrictCode
    tls_key: ec.EllipticCurvePrivateKey
    csr: x509.CertificateSigningRequest
    hpke_key: HpkePrivateKey
    signing_key: Ed25519PrivateKey
    endpoints: tuple[str, ...]

    def to_proto(self, *, include_csr: bool = True) -> registry_pb2.DistrictKeys:
        """The public halves, as sent to the registry in ``Enroll`` / ``UpdateEntry``."""
        suite = self.hpke_key.suite
        return registry_pb2.DistrictKeys(
            tls_csr_pem=self.csr.public_bytes(serialization.Encoding.PEM) if include_csr else b"",
            hpke_kem=suite.kem,
            hpke_kdf=suite.kdf,
            hpke_aead=suite.aead,
            hpke_public_key=self.hpke_key.public_key().public_bytes(),
            signing_public_key=self.signing_key.public_key().public_bytes_raw(),
            endpoints=list(self.endpoints),
        )

    def tls_key_pem(self) -> bytes:
        return self.tls_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"DistrictKeys(code={self.code!r}, endpoints={self.endpoints!r}, <private keys>)"


@dataclass(frozen=True)
class DistrictIdentity:
    """An enrolled district's identity as loaded from its data directory."""

    code: DistrictCode
    tls: TlsIdentity
    hpke_key: HpkePrivateKey
    signing_key: Ed25519PrivateKey
    entry: common_pb2.SignedEnvelope  # as the registry signed it; verify before trusting

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.tls.cert_pem)

    def keys(self, endpoints: tuple[str, ...]) -> DistrictKeys:
        """The current keys as ``DistrictKeys`` (e.g. to rotate only one of them)."""
        tls_key = serialization.load_pem_private_key(self.tls.key_pem, password=None)
        if not isinstance(tls_key, ec.EllipticCurvePrivateKey):
            raise ConfigError("the district's TLS key is not an EC key")
        return DistrictKeys(
            code=self.code,
            tls_key=tls_key,
            csr=make_csr(tls_key, self.code),
            hpke_key=self.hpke_key,
            signing_key=self.signing_key,
            endpoints=endpoints,
        )

    def __repr__(self) -> str:
        return f"DistrictIdentity(code={self.code!r}, <keys>)"


def endpoint_hosts(endpoints: tuple[str, ...] | list[str]) -> list[str]:
    """The distinct host names of ``host:port`` endpoints, in order. Raises ``InvalidInput``."""
    hosts: list[str] = []
    for endpoint in endpoints:
        host, _ = split_host_port(endpoint)
        if host not in hosts:
            hosts.append(host)
    return hosts


def make_csr(
    tls_key: ec.EllipticCurvePrivateKey, code: DistrictCode
) -> x509.CertificateSigningRequest:
    """A CSR for ``tls_key``: CN = code, SANs = its SPIFFE id and its district server name.

    It proves possession of the key; the registry builds the certificate's
    names from the district code itself and ignores the ones asked for here.
    """
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_id(code)),
        x509.DNSName(district_server_name(code)),
    ]
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code)]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(tls_key, hashes.SHA256())
    )


def generate_keys(
    code: str, endpoints: tuple[str, ...] | list[str], hpke_suite: HpkeSuite = DEFAULT_SUITE
) -> DistrictKeys:
    """Fresh TLS, HPKE and signing keys for district ``code``, in memory only.

    Raises ``InvalidInput`` for a malformed code or endpoint.
    """
    district = parse_district_code(code)
    endpoint_tuple = tuple(endpoints)
    if not endpoint_tuple:
        raise InvalidInput("give at least one endpoint (host:port) other districts can reach")
    endpoint_hosts(endpoint_tuple)  # validates
    tls_key = ec.generate_private_key(ec.SECP256R1())
    return DistrictKeys(
        code=district,
        tls_key=tls_key,
        csr=make_csr(tls_key, district),
        hpke_key=HpkePrivateKey.generate(hpke_suite),
        signing_key=Ed25519PrivateKey.generate(),
        endpoints=endpoint_tuple,
    )


def has_identity(data_dir: Path) -> bool:
    """True if ``data_dir`` already holds any of a district's identity files."""
    return any((Path(data_dir) / name).exists() for name in _ALL_FILES)


def save_enrollment(
    data_dir: Path,
    keys: DistrictKeys,
    certificate_pem: bytes,
    ca_pem: bytes,
    entry: common_pb2.SignedEnvelope,
) -> DistrictIdentity:
    """Store an enrollment's (or rotation's) results in ``data_dir`` and return the identity.

    Creates ``data_dir`` with mode 0700 (and tightens an existing one). Each file
    is replaced atomically; the TLS key goes before its certificate, so a crash
    in between leaves a key and certificate that ``load_identity`` refuses as
    mismatched rather than an identity that half-works. Raises ``ConfigError``
    if the directory cannot be written.
    """
    data_dir = Path(data_dir)
    tls = TlsIdentity(key_pem=keys.tls_key_pem(), cert_pem=certificate_pem, ca_pem=ca_pem)
    hpke_doc = {
        "suite": keys.hpke_key.suite.name,
        "private_key": base64.b64encode(keys.hpke_key.private_bytes()).decode("ascii"),
    }
    signing_pem = keys.signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        write_file_atomically(data_dir / TLS_KEY_FILE, tls.key_pem, 0o600)
        if os.environ.get("RT_TEST_CRASH_AT") == "identity-half-written":
            os._exit(99)  # tests: die as a power cut would, the new key saved, its certificate not
        write_file_atomically(data_dir / HPKE_KEY_FILE, json.dumps(hpke_doc).encode(), 0o600)
        write_file_atomically(data_dir / SIGNING_KEY_FILE, signing_pem, 0o600)
        write_file_atomically(data_dir / TLS_CERT_FILE, certificate_pem, 0o644)
        write_file_atomically(data_dir / CA_FILE, ca_pem, 0o644)
        write_file_atomically(data_dir / ENTRY_FILE, entry.SerializeToString(), 0o644)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the district's keys to {data_dir}: {exc.strerror or exc}"
        ) from exc
    return DistrictIdentity(
        code=keys.code, tls=tls, hpke_key=keys.hpke_key, signing_key=keys.signing_key, entry=entry
    )


def load_identity(data_dir: Path) -> DistrictIdentity:
    """Load the enrolled identity from ``data_dir``.

    Raises ``ConfigError`` when a file is missing or malformed, when a private
    key file is readable by group or others, or when the TLS key does not
    match the certificate.
    """
    data_dir = Path(data_dir)
    missing = [name for name in _ALL_FILES if not (data_dir / name).is_file()]
    if missing:
        raise ConfigError(
            f"{data_dir} does not hold an enrolled district (missing {', '.join(missing)}); "
            "run `rt enroll` first"
        )
    for name in KEY_FILES:
        _check_private(data_dir / name)
    key_pem = _read(data_dir / TLS_KEY_FILE)
    cert_pem = _read(data_dir / TLS_CERT_FILE)
    ca_pem = _read(data_dir / CA_FILE)
    try:
        tls_key = serialization.load_pem_private_key(key_pem, password=None)
        cert = x509.load_pem_x509_certificate(cert_pem)
        x509.load_pem_x509_certificates(ca_pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{data_dir}: TLS key, certificate or CA file is malformed") from exc
    public_der = serialization.PublicFormat.SubjectPublicKeyInfo
    if tls_key.public_key().public_bytes(serialization.Encoding.DER, public_der) != (
        cert.public_key().public_bytes(serialization.Encoding.DER, public_der)
    ):
        raise ConfigError(
            f"{data_dir}: {TLS_KEY_FILE} does not match {TLS_CERT_FILE} "
            "(an interrupted key rotation?); re-enroll the district"
        )
    try:
        code = district_of_certificate(cert)
    except PeerAuthError as exc:
        raise ConfigError(f"{data_dir}: {TLS_CERT_FILE} does not name a district") from exc
    hpke_key = _load_hpke(data_dir / HPKE_KEY_FILE)
    try:
        signing_key = serialization.load_pem_private_key(_read(data_dir / SIGNING_KEY_FILE), None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{data_dir}: {SIGNING_KEY_FILE} is malformed") from exc
    if not isinstance(signing_key, Ed25519PrivateKey):
        raise ConfigError(f"{data_dir}: {SIGNING_KEY_FILE} is not an Ed25519 key")
    entry = common_pb2.SignedEnvelope()
    try:
        entry.ParseFromString(_read(data_dir / ENTRY_FILE))
    except DecodeError as exc:
        raise ConfigError(f"{data_dir}: {ENTRY_FILE} is malformed") from exc
    return DistrictIdentity(
        code=code,
        tls=TlsIdentity(key_pem=key_pem, cert_pem=cert_pem, ca_pem=ca_pem),
        hpke_key=hpke_key,
        signing_key=signing_key,
        entry=entry,
    )


def write_file_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data``: temp file created with ``mode``, fsync, rename, fsync dir.

    The file is created with its final mode (no window in which a key file is
    world-readable). Raises ``OSError``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have removed bits we asked for
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):04o}); "
            f"fix it with `chmod 600 {path}`"
        )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _load_hpke(path: Path) -> HpkePrivateKey:
    try:
        doc = json.loads(_read(path))
        suite = suite_from_name(doc["suite"])
        return HpkePrivateKey.from_bytes(suite, base64.b64decode(doc["private_key"], validate=True))
    except (ValueError, KeyError, TypeError, InvalidInput) as exc:
        raise ConfigError(f"{path} is malformed") from exc
