"""The registry's certificate authority: it certifies district TLS keys and the registry's own.

A district certificate names exactly one district and nothing else, two
subjectAltNames the CA builds itself from the district code: the URI
``spiffe://records-transfer/district/<code>`` (DESIGN.md section 3; what the
peer gate and the registry read) and the DNS name
``rt_client.tls.district_server_name(code)``, which every client dialling the
district checks. No endpoint host and nothing a CSR asks for ever goes in: an
endpoint host is whatever the district typed, may be shared with other
districts, and so would let one district's certificate pass for another's
address. The registry's own server certificate carries
``rt_client.tls.REGISTRY_SERVER_NAME``, a name no district certificate may
ever carry, so a district cannot pose as the registry.

The CA is an EC P-256 key with a self-signed certificate limited to one level
(path length 0): it signs leaf certificates only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rt_client.errors import InvalidInput
from rt_client.ids import DistrictCode, parse_district_code, spiffe_id
from rt_client.tls import REGISTRY_SERVER_NAME, district_server_name, uri_sans

__all__ = ["RegistryCA", "check_host_name"]

_ALLOWED_CURVES: Final = (ec.SECP256R1, ec.SECP384R1)
_LABEL_RE: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Backdating absorbs small clock differences between the registry and peers.
_BACKDATE: Final = timedelta(minutes=5)


@dataclass(frozen=True)
class RegistryCA:
    """The CA key and certificate, and the certificates it issues."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(
        cls,
        common_name: str = "Records Transfer Registry CA",
        validity: timedelta = timedelta(days=3650),
        now: datetime | None = None,
    ) -> RegistryCA:
        """A new CA with a fresh EC P-256 key."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Records Transfer"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        start = (now or datetime.now(UTC)) - _BACKDATE
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, certificate=cert)

    @classmethod
    def from_pem(cls, key_pem: bytes, cert_pem: bytes) -> RegistryCA:
        """Load a CA. Raises ``InvalidInput`` if the files are malformed or do not match."""
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
            cert = x509.load_pem_x509_certificate(cert_pem)
        except (ValueError, TypeError) as exc:
            raise InvalidInput("the CA key or certificate is malformed") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise InvalidInput("the CA key does not match the CA certificate")
        return cls(key=key, certificate=cert)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def issue_district_certificate(
        self,
        csr: x509.CertificateSigningRequest | bytes,
        code: str,
        validity: timedelta,
        now: datetime | None = None,
    ) -> x509.Certificate:
        """Certify the key in ``csr`` as district ``code``.

        The CSR's signature must verify (proof of possession) and its key must
        be EC P-256 or P-384; a CSR that asks for any URI other than the
        district's own identity is refused. Only the CSR's key is used: its
        subject, requested names and extensions are ignored, and the
        certificate's names come from ``code`` alone. Raises ``InvalidInput``.
        """
        request = _load_csr(csr)
        if not request.is_signature_valid:
            raise InvalidInput("the certificate request's signature does not verify")
        district = parse_district_code(code)
        try:
            requested = request.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value
            requested_uris = requested.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            requested_uris = []
        if any(uri != spiffe_id(district) for uri in requested_uris):
            raise InvalidInput(
                "the certificate request asks for a URI other than the district's identity"
            )
        public_key = request.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise InvalidInput("the TLS key must be an EC P-256 key")
        return self.issue_district_certificate_for_key(public_key, district, validity, now)

    def issue_district_certificate_for_key(
        self,
        public_key: ec.EllipticCurvePublicKey,
        code: DistrictCode,
        validity: timedelta,
        now: datetime | None = None,
    ) -> x509.Certificate:
        """Certify an already-pinned key (e.g. a certificate renewed). Raises ``InvalidInput``."""
        if not isinstance(public_key.curve, _ALLOWED_CURVES):
            raise InvalidInput("the TLS key must be an EC P-256 key")
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(spiffe_id(code)),
            x509.DNSName(district_server_name(code)),
        ]
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Records Transfer"),
                x509.NameAttribute(NameOID.COMMON_NAME, code),
            ]
        )
        cert = self._issue(
            public_key,
            subject,
            names,
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            validity,
            now,
        )
        # What every client relies on, checked on what we actually signed: these
        # two names and no other, so no other district's name can ride along.
        issued = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if list(issued) != names:
            raise AssertionError("issued a district certificate with other names than its own")
        return cert

    def issue_server_certificate(
        self,
        public_key: ec.EllipticCurvePublicKey,
        hosts: Iterable[str],
        validity: timedelta,
        now: datetime | None = None,
    ) -> x509.Certificate:
        """The registry's own server certificate: ``REGISTRY_SERVER_NAME`` plus ``hosts``.

        Server authentication only: it cannot be used as a district's client
        certificate (it has no district URI either).
        """
        names: list[x509.GeneralName] = [x509.DNSName(REGISTRY_SERVER_NAME)]
        for host in dict.fromkeys(hosts):
            if host != REGISTRY_SERVER_NAME:
                names.append(_host_name(host, district=False))
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Records Transfer"),
                x509.NameAttribute(NameOID.COMMON_NAME, REGISTRY_SERVER_NAME),
            ]
        )
        return self._issue(
            public_key, subject, names, [ExtendedKeyUsageOID.SERVER_AUTH], validity, now
        )

    def _issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        subject: x509.Name,
        names: list[x509.GeneralName],
        usages: list[x509.ObjectIdentifier],
        validity: timedelta,
        now: datetime | None,
    ) -> x509.Certificate:
        start = (now or datetime.now(UTC)) - _BACKDATE
        end = min(start + validity, self.certificate.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        # The invariant every peer relies on, checked on what we actually signed.
        uris = uri_sans(cert)
        if len(uris) > 1:
            raise AssertionError("issued a certificate with several URI SANs")
        return cert


def check_host_name(host: str) -> str:
    """``host`` if a district may publish it as an endpoint host: an IP literal or a DNS name.

    Refuses wildcards, the registry's reserved server name, and anything that is
    not a plain lower-case LDH host name. (Endpoint hosts are not put in
    district certificates; the same rules keep the directory unambiguous.)
    Raises ``InvalidInput``.
    """
    _host_name(host, district=True)
    return host


def _host_name(host: str, *, district: bool) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.rstrip(".")
    if name != name.lower():
        raise InvalidInput(f"endpoint host {host!r} must be lower case")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise InvalidInput(f"endpoint host {host!r} is not a valid host name")
    if district and (name == REGISTRY_SERVER_NAME or name.endswith("." + REGISTRY_SERVER_NAME)):
        raise InvalidInput(f"endpoint host {host!r} is reserved for the registry")
    return x509.DNSName(name)


def _load_csr(csr: x509.CertificateSigningRequest | bytes) -> x509.CertificateSigningRequest:
    if isinstance(csr, x509.CertificateSigningRequest):
        return csr
    try:
        return x509.load_pem_x509_csr(bytes(csr))
    except ValueError as exc:
        raise InvalidInput("the certificate request is not a PEM PKCS#10 request") from exc
