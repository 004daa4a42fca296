"""The transport: gRPC over TLS 1.2/1.3 with mutual authentication (DESIGN.md section 3).

gRPC Python exposes few TLS knobs. What this module controls, and how:

- **Cipher suites.** gRPC core reads ``GRPC_SSL_CIPHER_SUITES`` once, *when
  ``grpc`` is first imported* (verified with grpcio 1.85: setting it later,
  even before any credentials exist, has no effect). ``configure_grpc_tls``
  sets it to ECDHE key exchange with AEAD ciphers only (plus the three TLS 1.3
  suites, all AEAD, which gRPC expects in the same list) and refuses to run
  after ``grpc`` was imported with another list. Entry points call it before
  importing anything that imports ``grpc``; this module itself imports
  ``grpc`` only inside its functions so that it can be imported first.
- **Protocol versions.** gRPC core's defaults are minimum TLS 1.2, maximum TLS
  1.3, and Python cannot change them; ``tests/integration/test_tls_versions.py``
  proves a TLS 1.1 client is refused. The negotiated version is also visible to
  servers as the ``ssl_tls_version`` auth-context property, which the peer
  authorization checks on every call (``rt_server.rpc.auth``).
- **Client certificates.** Every listener but the registry's enrollment port
  requires one (``require_client_auth=True``).

It also holds the helpers every party uses to name a TLS peer: the SHA-256 of a
certificate's SubjectPublicKeyInfo (what directory entries pin), the district
named by a certificate's only URI SAN, and the DNS name a district's server
certificate carries (``district_server_name``), which every client dialling a
district checks whatever address it connects to.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rt_client.errors import InvalidInput, PeerAuthError
from rt_client.ids import DistrictCode, district_from_spiffe, parse_district_code

if TYPE_CHECKING:
    # Imported inside each function instead: ``configure_grpc_tls`` must be
    # importable and callable before anything imports grpc.
    import grpc

__all__ = [
    "ALLOWED_TLS_VERSIONS",
    "CHANNEL_KEEPALIVE_OPTIONS",
    "DISTRICT_SERVER_NAME_SUFFIX",
    "REGISTRY_SERVER_NAME",
    "SERVER_KEEPALIVE_OPTIONS",
    "TLS_CIPHER_SUITES",
    "TlsIdentity",
    "channel_credentials",
    "configure_grpc_tls",
    "grpc_tls_in_force",
    "district_of_certificate",
    "district_server_name",
    "format_host_port",
    "load_certificate",
    "negotiated_tls_version",
    "peer_certificate",
    "secure_channel",
    "server_credentials",
    "server_only_channel",
    "server_only_credentials",
    "spki_sha256",
    "split_host_port",
    "uri_sans",
]

# TLS 1.3 suites first (all AEAD, all ephemeral key exchange), then the TLS 1.2
# suites we allow: ECDHE (forward secrecy) with an AEAD cipher. No CBC, no
# static-RSA or DHE key exchange. gRPC's own default adds nothing we would want
# beyond this and lacks ChaCha20 for TLS 1.2 (kept for CPUs without AES-NI).
TLS_CIPHER_SUITES: Final = ":".join(
    [
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)

# Values of the ``ssl_tls_version`` auth-context property we accept.
ALLOWED_TLS_VERSIONS: Final = frozenset({"TLSv1.2", "TLSv1.3"})

# The DNS name in the registry's server certificate that clients check,
# whatever address they dial. District certificates can never carry it (the
# registry CA refuses), so a district holding a certificate for a shared host
# such as 127.0.0.1 still cannot pose as the registry and harvest authorization
# codes at enrollment. ``.internal`` is reserved for private use (ICANN, 2024).
REGISTRY_SERVER_NAME: Final = "registry.records-transfer.internal"

# Every district certificate carries the DNS name ``<code>.`` + this suffix, and
# every client dialling a district's peer server checks that name (as the TLS
# target name), never the endpoint's host: endpoint hosts are shared (hosting
# providers, loopback in tests) and a district names its own, so only a name
# the registry CA gives one district alone tells a client it reached that
# district. See ``district_server_name``.
DISTRICT_SERVER_NAME_SUFFIX: Final = "district.records-transfer.internal"

# Clients ping an idle call every 30 s (a dead peer is noticed in ~40 s); the
# server allows pings that often (gRPC's default would answer them with
# GOAWAY "too_many_pings") and pings its clients every minute.
CHANNEL_KEEPALIVE_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 2),
)
SERVER_KEEPALIVE_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 20_000),
    ("grpc.http2.max_ping_strikes", 2),
)

_CIPHER_ENV: Final = "GRPC_SSL_CIPHER_SUITES"


def configure_grpc_tls() -> None:
    """Restrict gRPC's TLS cipher suites for this process.

    Must run before ``grpc`` is first imported (gRPC core reads the variable
    then, once). Overrides any other value already in the environment: the
    restriction is policy, not a preference. Raises ``RuntimeError`` when
    ``grpc`` was already imported under another cipher list, since the
    restriction could no longer take effect and must not silently not apply.
    """
    if os.environ.get(_CIPHER_ENV) == TLS_CIPHER_SUITES:
        return  # already in force: set by an earlier call, a launcher, or the shell
    if "grpc" in sys.modules:
        raise RuntimeError(
            "configure_grpc_tls() ran after `import grpc`: gRPC reads GRPC_SSL_CIPHER_SUITES "
            "when it is imported, so the TLS cipher restriction would not apply. Call it at "
            "the top of the entry point, before importing anything that imports grpc."
        )
    os.environ[_CIPHER_ENV] = TLS_CIPHER_SUITES


def grpc_tls_in_force() -> bool:
    """True if this process's gRPC runs under ``TLS_CIPHER_SUITES`` (see ``configure_grpc_tls``)."""
    return os.environ.get(_CIPHER_ENV) == TLS_CIPHER_SUITES


@dataclass(frozen=True)
class TlsIdentity:
    """One party's TLS material: its key and certificate, and the CA it trusts (all PEM)."""

    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client credentials presenting this identity."""
        return channel_credentials(self.key_pem, self.cert_pem, self.ca_pem)

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials presenting this identity and requiring a client certificate."""
        return server_credentials(self.key_pem, self.cert_pem, self.ca_pem)

    def spki_sha256(self) -> bytes:
        """SHA-256 of this identity's SubjectPublicKeyInfo (as pinned in directory entries)."""
        return spki_sha256(self.cert_pem)

    def __repr__(self) -> str:
        # Never print the private key (dataclass repr would).
        return "TlsIdentity(<key>, <certificate>, <ca>)"


def server_credentials(key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> grpc.ServerCredentials:
    """Credentials for a listener that requires a client certificate issued by ``ca_pem``."""
    import grpc

    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True
    )


def server_only_credentials(key_pem: bytes, cert_pem: bytes) -> grpc.ServerCredentials:
    """Credentials for the registry's enrollment listener: server-authenticated TLS only.

    Only ``registry.server`` uses this: a district has no certificate before it
    enrolls and proves itself with its authorization code instead.
    """
    import grpc

    return grpc.ssl_server_credentials([(key_pem, cert_pem)], require_client_auth=False)


def channel_credentials(key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> grpc.ChannelCredentials:
    """Client credentials that present ``cert_pem`` and trust servers issued by ``ca_pem``."""
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def secure_channel(
    target: str,
    credentials: grpc.ChannelCredentials,
    server_name: str | None = None,
    options: Sequence[tuple[str, object]] = (),
) -> grpc.Channel:
    """A TLS channel to ``target`` (host:port), keepalive on.

    ``server_name`` is the name the server's certificate must carry; it is only
    passed to gRPC (as ``grpc.ssl_target_name_override``) when it differs from
    the host dialled, since the override also replaces the SNI and authority.
    """
    import grpc

    all_options: list[tuple[str, object]] = [*CHANNEL_KEEPALIVE_OPTIONS, *options]
    if server_name is not None:
        host, _ = split_host_port(target)
        if server_name != host:
            all_options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, credentials, options=all_options)


def server_only_channel(
    target: str, ca_pem: bytes, server_name: str | None = REGISTRY_SERVER_NAME
) -> grpc.Channel:
    """A channel that authenticates the server only (the registry's enrollment port)."""
    import grpc

    return secure_channel(
        target, grpc.ssl_channel_credentials(root_certificates=ca_pem), server_name
    )


def load_certificate(cert: bytes | x509.Certificate) -> x509.Certificate:
    """``cert`` as a certificate object. Raises ``InvalidInput`` unless it is a PEM certificate."""
    if isinstance(cert, x509.Certificate):
        return cert
    try:
        return x509.load_pem_x509_certificate(bytes(cert))
    except ValueError as exc:
        raise InvalidInput("not a PEM certificate") from exc


def spki_sha256(cert: bytes | x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER SubjectPublicKeyInfo: what a directory entry pins.

    The key, not the certificate, is pinned, so the registry can reissue a
    certificate (e.g. a new validity) without a key rotation.
    """
    spki = (
        load_certificate(cert)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return hashlib.sha256(spki).digest()


def district_server_name(code: str) -> str:
    """``<code>.district.records-transfer.internal``: the TLS name only district ``code`` holds.

    The registry CA puts it in the district's certificate; a client dialling
    the district's peer server passes it as the TLS target name
    (``grpc.ssl_target_name_override``), so a server holding any other
    district's certificate fails the handshake. Raises ``InvalidInput`` for a
    malformed code.
    """
    return f"{parse_district_code(code)}.{DISTRICT_SERVER_NAME_SUFFIX}"


def uri_sans(cert: x509.Certificate) -> list[str]:
    """Every URI in the certificate's subjectAltName (empty if it has none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def district_of_certificate(cert: x509.Certificate) -> DistrictCode:
    """The district a certificate names.

    Raises ``PeerAuthError`` unless the certificate has exactly one URI SAN
    and it is a valid district identity.
    """
    uris = uri_sans(cert)
    if len(uris) != 1:
        raise PeerAuthError(f"certificate has {len(uris)} URI SANs, expected exactly one")
    try:
        return district_from_spiffe(uris[0])
    except InvalidInput as exc:
        raise PeerAuthError("certificate's URI SAN is not a district identity") from exc


def peer_certificate(auth_context: Mapping[str, Sequence[bytes]]) -> x509.Certificate | None:
    """The verified peer's leaf certificate from a call's ``auth_context()``, if any.

    Parsed from gRPC's ``x509_pem_cert`` property rather than trusting gRPC's
    pre-digested ``peer_uri``/``peer_spiffe_id`` properties: those flatten or
    drop SANs (``peer_spiffe_id`` is absent when there are several URIs), and
    "exactly one URI SAN" can only be checked on the certificate itself.
    Returns ``None`` when the channel is not TLS or the peer sent no
    certificate; raises ``PeerAuthError`` for a property that does not parse.
    """
    if list(auth_context.get("transport_security_type", [])) != [b"ssl"]:
        return None
    pems = list(auth_context.get("x509_pem_cert", []))
    if not pems:
        return None
    if len(pems) != 1:
        raise PeerAuthError("several peer certificates in the auth context")
    try:
        return x509.load_pem_x509_certificate(pems[0])
    except ValueError as exc:
        raise PeerAuthError("peer certificate does not parse") from exc


def negotiated_tls_version(auth_context: Mapping[str, Sequence[bytes]]) -> str | None:
    """The TLS version gRPC negotiated for the call (e.g. ``"TLSv1.3"``), if it says."""
    values = list(auth_context.get("ssl_tls_version", []))
    if len(values) != 1:
        return None
    return values[0].decode("ascii", errors="replace")


def split_host_port(endpoint: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:port``) split into host and port.

    Raises ``InvalidInput`` for anything else. Port 0 is allowed: it means
    "any free port" for a listen address.
    """
    text = endpoint.strip() if isinstance(endpoint, str) else ""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isascii() or not port_text.isdigit():
        raise InvalidInput(f"{endpoint!r} is not host:port (e.g. rt.district.k12.ca.us:7443)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise InvalidInput(f"{endpoint!r}: {host!r} is not an IPv6 address") from exc
    elif ":" in host:
        raise InvalidInput(f"{endpoint!r}: write an IPv6 address in brackets, e.g. [::1]:7443")
    port = int(port_text)
    if port > 65535:
        raise InvalidInput(f"{endpoint!r}: port {port} is out of range")
    return host, port


def format_host_port(host: str, port: int) -> str:
    """The inverse of ``split_host_port``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
