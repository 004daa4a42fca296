"""What a district submits to the registry (keys, endpoints), and the checks on it.

Used by enrollment (``registry.enrollment``), by ``UpdateEntry`` and by the
operator's ``district add`` (``registry.service``). Every check raises
``InvalidInput`` naming the bad field; nothing here touches a key store.

**Endpoints** are each held by one active district at a time
(``refuse_endpoints_held``): a ``host:port`` another active district already
publishes is refused, so the directory never sends one district's traffic to
another's listener. The whole ``host:port`` is compared, not the host:
districts share hosts (a hosting provider, loopback in tests), which is safe
because clients check each district's own TLS name
(``rt_client.tls.district_server_name``), never the endpoint's host.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509

from protos.rt.v1 import registry_pb2
from registry.ca import check_host_name
from registry.store import STATUS_ACTIVE, StoreTransaction
from rt_client.crypto.envelope import load_ed25519_public
from rt_client.crypto.hpke import HpkePublicKey, HpkeSuite, suite_from_names
from rt_client.errors import InvalidInput
from rt_client.ids import DistrictCode
from rt_client.tls import split_host_port

__all__ = [
    "MAX_ENDPOINTS",
    "CheckedKeys",
    "KeySubmission",
    "check_endpoints",
    "check_keys",
    "refuse_endpoints_held",
]

# The registry's rules log under one name, whichever module applies them.
log = logging.getLogger("registry.service")

MAX_ENDPOINTS: Final = 16
_MAX_CSR_BYTES: Final = 8192


@dataclass(frozen=True)
class KeySubmission:
    """The public keys a district submits in ``Enroll`` or ``UpdateEntry`` (empty = unchanged)."""

    tls_csr_pem: bytes = b""
    hpke_kem: str = ""
    hpke_kdf: str = ""
    hpke_aead: str = ""
    hpke_public_key: bytes = b""
    signing_public_key: bytes = b""
    endpoints: tuple[str, ...] = ()

    @classmethod
    def from_proto(cls, msg: registry_pb2.DistrictKeys) -> KeySubmission:
        return cls(
            tls_csr_pem=bytes(msg.tls_csr_pem),
            hpke_kem=msg.hpke_kem,
            hpke_kdf=msg.hpke_kdf,
            hpke_aead=msg.hpke_aead,
            hpke_public_key=bytes(msg.hpke_public_key),
            signing_public_key=bytes(msg.signing_public_key),
            endpoints=tuple(msg.endpoints),
        )


@dataclass(frozen=True)
class CheckedKeys:
    """A ``KeySubmission`` parsed and bound-checked (``None``: not submitted)."""

    csr: x509.CertificateSigningRequest | None
    hpke: tuple[HpkeSuite, bytes] | None
    signing_public_key: bytes | None
    endpoints: tuple[str, ...] | None


def check_endpoints(endpoints: Sequence[str]) -> tuple[str, ...]:
    """Validate ``host:port`` endpoints a district publishes. Raises ``InvalidInput``."""
    if len(endpoints) > MAX_ENDPOINTS:
        raise InvalidInput(f"at most {MAX_ENDPOINTS} endpoints")
    for endpoint in endpoints:
        if len(endpoint) > 270:
            raise InvalidInput("endpoint is too long")
        host, port = split_host_port(endpoint)
        if port == 0:
            raise InvalidInput(f"endpoint {endpoint!r} needs a real port, not 0")
        check_host_name(host)
    return tuple(endpoints)


def check_keys(sub: KeySubmission, *, partial: bool) -> CheckedKeys:
    """Parse and bound-check submitted keys. ``partial``: empty fields mean "unchanged".

    Raises ``InvalidInput`` naming the bad field.
    """
    csr = None
    if sub.tls_csr_pem or not partial:
        if not sub.tls_csr_pem or len(sub.tls_csr_pem) > _MAX_CSR_BYTES:
            raise InvalidInput("keys.tls_csr_pem: missing or too large")
        try:
            csr = x509.load_pem_x509_csr(sub.tls_csr_pem)
        except ValueError as exc:
            raise InvalidInput("keys.tls_csr_pem: not a PEM certificate request") from exc
        if not csr.is_signature_valid:
            raise InvalidInput("keys.tls_csr_pem: the request's signature does not verify")
    hpke = None
    hpke_fields = (sub.hpke_kem, sub.hpke_kdf, sub.hpke_aead, sub.hpke_public_key)
    if any(hpke_fields) or not partial:
        try:
            suite = suite_from_names(sub.hpke_kem, sub.hpke_kdf, sub.hpke_aead)
            HpkePublicKey.from_bytes(suite, sub.hpke_public_key)
        except InvalidInput as exc:
            raise InvalidInput(f"keys.hpke_*: {exc}") from exc
        hpke = (suite, bytes(sub.hpke_public_key))
    signing = None
    if sub.signing_public_key or not partial:
        try:
            load_ed25519_public(sub.signing_public_key)
        except InvalidInput as exc:
            raise InvalidInput(f"keys.signing_public_key: {exc}") from exc
        signing = bytes(sub.signing_public_key)
    endpoints = check_endpoints(sub.endpoints) if sub.endpoints else None
    return CheckedKeys(csr=csr, hpke=hpke, signing_public_key=signing, endpoints=endpoints)


def refuse_endpoints_held(
    tx: StoreTransaction, district: DistrictCode, endpoints: Sequence[str]
) -> None:
    """Raises ``InvalidInput`` if another active district publishes one of ``endpoints``.

    Pending districts (named by the operator, not enrolled) hold nothing yet,
    and a revoked district's endpoints are free for whoever moves in.
    """
    wanted = {_listener(endpoint): endpoint for endpoint in endpoints}
    for row in tx.list_districts():
        if row.code == district or row.status != STATUS_ACTIVE:
            continue
        for held in row.endpoints:
            endpoint = wanted.get(_listener(held))
            if endpoint is not None:
                log.warning(
                    "district %s asked for endpoint %s, which district %s holds",
                    district,
                    endpoint,
                    row.code,
                )
                raise InvalidInput(
                    f"endpoint {endpoint} is already registered to another district; "
                    "give this district's own host:port"
                )


_Host = str | ipaddress.IPv4Address | ipaddress.IPv6Address


def _listener(endpoint: str) -> tuple[_Host, int]:
    """``endpoint`` reduced to what decides which listener it reaches.

    The host, an IP address by value (an IPv4-mapped IPv6 address as IPv4) or a
    name lower-cased without its trailing dot, and the port. Raises
    ``InvalidInput`` unless ``endpoint`` is host:port.
    """
    host, port = split_host_port(endpoint)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.rstrip(".").lower(), port
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped, port  # ::ffff:10.0.0.1 is 10.0.0.1
    return address, port
