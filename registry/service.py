"""The registry's logic, and the thin gRPC servicers in front of it.

``RegistryService`` holds every rule and knows nothing of gRPC:

- **Enroll** binds freshly generated district keys to a district code. The
  authorization code is compared in constant time against its scrypt hash; an
  unknown district is hashed against a dummy so timing does not reveal which
  districts exist. A code is single use: a successful enrollment consumes it,
  and a later re-enrollment (new keys, higher version) needs ``rotate_code``.
- **Failed enrollments lock out their source, never the district**
  (``registry._limiter``): after ``lockout_threshold`` failures from one
  address (an IPv6 /64) at one district, that address is refused at that
  district for ``lockout_seconds``; after ``lockout_source_threshold`` failures
  at any districts, at every district. The lock doubles with each further
  lockout of the address, up to ``lockout_max_seconds``; attempts refused by it
  are not counted and do not extend it. District codes are public, so a lock
  on the district would let anyone keep it from enrolling; a lock on the source
  cannot be moved onto the district's own operator by anyone else, and their
  right code works whatever others tried. Nothing is lost by having no
  district-wide lock: an authorization code carries 256 bits of entropy
  (``registry.authcode``), so guessing it from any number of addresses is
  hopeless; the lockout only stops one source from hammering the scrypt.
  Failed attempts, and when a source was last locked out, are kept per
  district for the operator (``rt-registry district list``).
- Every refusal, a locked source's included, is the same
  ``EnrollmentRefused("enrollment refused")`` after the same work (one scrypt)
  and padded to the same time (``_refuse_evenly``); the reason and the
  caller's address go to the log.
- **Endpoints** are each held by one active district at a time: ``district
  add``, ``Enroll`` and ``UpdateEntry`` refuse a ``host:port`` another active
  district already publishes (``InvalidInput``), so the directory never sends
  one district's traffic to another's listener. The whole ``host:port`` is
  compared, not the host: districts share hosts (a hosting provider, loopback
  in tests), which is safe because clients check each district's own TLS name
  (``rt_client.tls.district_server_name``), never the endpoint's host.
- **Callers** of every other method are districts identified by the one URI
  SAN of their certificate *and* a key equal to the one their current, active
  entry pins: a revoked district or a rotated-away certificate is refused.
- **Entries** are signed with the registry's Ed25519 key; every change is a new
  version. Entries are re-signed (new version, new validity) when less than half
  of their validity is left, so an active district's entry never expires.

The servicers only translate proto <-> domain and map errors to status codes
in one place (``_rpc``).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, NoReturn, TypeVar

import grpc
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from protos.rt.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from registry._limiter import EVERY_DISTRICT, EnrollmentLimiter, Lockout, MonotonicClock
from registry.authcode import (
    MAX_CODE_LENGTH,
    hash_authorization_code,
    new_authorization_code,
    verify_authorization_code,
)
from registry.ca import RegistryCA, check_host_name
from registry.store import (
    STATUS_ACTIVE,
    STATUS_PENDING,
    STATUS_REVOKED,
    EntryRow,
    RegistryStore,
    SchoolRow,
    StoreTransaction,
)
from rt_client.callgate import client_address
from rt_client.config import RegistryConfig
from rt_client.crypto.envelope import LABEL_DIRECTORY_ENTRY, load_ed25519_public, sign_body
from rt_client.crypto.hpke import HpkePublicKey, HpkeSuite, key_id, suite_from_names
from rt_client.directory import (
    REGISTRY_SIGNER,
    Clock,
    DirectoryEntry,
    DistrictStatus,
    School,
    utc_now,
)
from rt_client.errors import (
    EnrollmentRefused,
    InvalidInput,
    NotFound,
    PeerAuthError,
    RecordsTransferError,
)
from rt_client.ids import (
    DistrictCode,
    SchoolCode,
    district_of_school,
    parse_district_code,
    parse_school_code,
)
from rt_client.tls import district_of_certificate, peer_certificate, spki_sha256, split_host_port

__all__ = [
    "MAX_ENDPOINTS",
    "STATUS_ACTIVE",
    "STATUS_PENDING",
    "STATUS_REVOKED",
    "CallerNotAuthenticated",
    "DistrictSummary",
    "EnrollOnlyServicer",
    "EnrollResult",
    "KeySubmission",
    "RegistryService",
    "RegistryServicer",
    "check_endpoints",
    "check_keys",
]

log = logging.getLogger("registry.service")

REFUSED: Final = "enrollment refused"
_MAX_CSR_BYTES: Final = 8192
_MAX_NAME_LENGTH: Final = 200
_MAX_QUERY_LENGTH: Final = 100
_DEFAULT_SEARCH_LIMIT: Final = 20
# Refusals are padded to the slowest of the last _REFUSAL_WINDOW, at most this long.
_REFUSAL_WINDOW: Final = 32
_MAX_REFUSAL_PAD_SECONDS: Final = 2.0
_MAX_SEARCH_LIMIT: Final = 100
MAX_ENDPOINTS: Final = 16

_T = TypeVar("_T")


class CallerNotAuthenticated(PeerAuthError):
    """The caller presented no usable district identity (as opposed to a refused one)."""


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
class _CheckedKeys:
    csr: x509.CertificateSigningRequest | None
    hpke: tuple[HpkeSuite, bytes] | None
    signing_public_key: bytes | None
    endpoints: tuple[str, ...] | None


@dataclass(frozen=True)
class EnrollResult:
    certificate_pem: bytes
    ca_certificate_pem: bytes
    entry: common_pb2.SignedEnvelope


@dataclass(frozen=True)
class DistrictSummary:
    """One row of ``rt-registry district list``."""

    code: DistrictCode
    name: str
    status: str
    endpoints: tuple[str, ...]
    schools: int
    version: int | None
    expires_at: datetime | None
    code_outstanding: bool
    failed_attempts: int  # since its authorization code was issued
    last_lockout_at: datetime | None  # when a source was last locked out of it


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


def check_keys(sub: KeySubmission, *, partial: bool) -> _CheckedKeys:
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
    return _CheckedKeys(csr=csr, hpke=hpke, signing_public_key=signing, endpoints=endpoints)


class RegistryService:
    """Every rule of the registry, over a store, a CA and the signing key."""

    def __init__(
        self,
        store: RegistryStore,
        ca: RegistryCA,
        signing_key: Ed25519PrivateKey,
        config: RegistryConfig,
        clock: Clock = utc_now,
        monotonic: MonotonicClock = time.monotonic,
    ) -> None:
        """``clock`` dates what is stored and signed; ``monotonic`` times enrollment lockouts."""
        self._store = store
        self._ca = ca
        self._signing_key = signing_key
        self._config = config
        self._clock = clock
        self._entry_validity = timedelta(days=config.entry_validity_days)
        self._cert_validity = timedelta(days=config.certificate_validity_days)
        # Hashed against when the district is unknown or has no code, so the
        # answer takes as long as for a real district.
        self._dummy_hash = hash_authorization_code(new_authorization_code(), config.scrypt_n)
        # How long recent refusals took (see ``_refuse_evenly``).
        self._refusal_seconds: deque[float] = deque(maxlen=_REFUSAL_WINDOW)
        self._refusal_lock = threading.Lock()
        self._limiter = EnrollmentLimiter(
            district_threshold=config.lockout_threshold,
            source_threshold=config.lockout_source_threshold,
            lock_seconds=config.lockout_seconds,
            max_lock_seconds=config.lockout_max_seconds,
            max_sources=config.lockout_max_sources,
            clock=monotonic,
        )

    @property
    def ca(self) -> RegistryCA:
        return self._ca

    @property
    def signing_public_key(self) -> bytes:
        return self._signing_key.public_key().public_bytes_raw()

    # -- operator --------------------------------------------------------

    def add_district(
        self,
        code: str,
        name: str,
        schools: Sequence[tuple[str, str]],
        endpoints: Sequence[str] = (),
    ) -> str:
        """Register a district and return its authorization code (shown once, stored hashed).

        Raises ``InvalidInput`` for bad values, a district or school already
        registered, or an endpoint another active district holds.
        """
        district = parse_district_code(code)
        name = _check_name("district name", name)
        school_rows: list[tuple[SchoolCode, str]] = []
        for cds, school_name in schools:
            school = parse_school_code(cds)
            if district_of_school(school) != district:
                raise InvalidInput(f"school {school} does not belong to district {district}")
            school_rows.append((school, _check_name("school name", school_name)))
        if len({s for s, _ in school_rows}) != len(school_rows):
            raise InvalidInput("a school is listed twice")
        checked = check_endpoints(list(endpoints))
        auth_code = new_authorization_code()
        hashed = hash_authorization_code(auth_code, self._config.scrypt_n)
        with self._store.transaction() as tx:
            _refuse_endpoints_held(tx, district, checked)
            tx.add_district(district, name, checked, hashed, school_rows, self._clock())
        log.info("district %s added (%d schools)", district, len(school_rows))
        return auth_code

    def rotate_code(self, code: str) -> str:
        """Issue a new authorization code (the old one stops working; the failure count restarts).

        Enrolling with it replaces the district's keys, and reactivates a
        revoked district. Raises ``NotFound``.
        """
        district = parse_district_code(code)
        auth_code = new_authorization_code()
        hashed = hash_authorization_code(auth_code, self._config.scrypt_n)
        with self._store.transaction() as tx:
            tx.require_district(district, for_update=True)
            tx.set_authorization_code(district, hashed)
        log.info("authorization code of district %s rotated", district)
        return auth_code

    def revoke(self, code: str) -> bool:
        """Revoke a district: a new entry version with status revoked, and no code outstanding.

        Returns False if it was already revoked. Raises ``NotFound``.
        """
        district = parse_district_code(code)
        now = self._clock()
        with self._store.transaction() as tx:
            row = tx.require_district(district, for_update=True)
            if row.status == STATUS_REVOKED:
                return False
            tx.set_district_state(district, status=STATUS_REVOKED)
            tx.set_authorization_code(district, None)
            current = tx.current_entry(district)
            if current is not None:
                entry = replace(
                    _parse_stored(current),
                    status=DistrictStatus.REVOKED,
                    version=current.version + 1,
                    issued_at=now,
                    expires_at=now + self._entry_validity,
                )
                self._store_entry(tx, entry)
        log.warning("district %s revoked", district)
        return True

    def districts_overview(self) -> list[DistrictSummary]:
        with self._store.transaction() as tx:
            result = []
            for row in tx.list_districts():
                current = tx.current_entry(row.code)
                result.append(
                    DistrictSummary(
                        code=row.code,
                        name=row.name,
                        status=row.status,
                        endpoints=row.endpoints,
                        schools=len(tx.schools_of(row.code)),
                        version=current.version if current else None,
                        expires_at=current.expires_at if current else None,
                        code_outstanding=row.auth_code_hash is not None,
                        failed_attempts=row.failed_attempts,
                        last_lockout_at=row.last_lockout_at,
                    )
                )
            return result

    # -- enrollment ------------------------------------------------------

    def enroll(
        self, code: str, authorization_code: str, keys: KeySubmission, *, source: str
    ) -> EnrollResult:
        """Bind ``keys`` to district ``code``; see the module docstring for the rules.

        ``source`` is the caller's network address (``"192.0.2.7"``, ``"2001:db8::7"``):
        failures are counted, and locked out, per source. Raises ``InvalidInput``
        for malformed keys (before the code is checked: that reveals nothing
        about the district) or, once the code is accepted, for an endpoint
        another active district holds (nothing is changed and the code stays
        unused); ``EnrollmentRefused`` for every authorization
        failure alike.
        """
        district = parse_district_code(code)
        started = time.monotonic()
        checked = check_keys(keys, partial=False)
        assert checked.csr is not None and checked.hpke is not None  # partial=False
        assert checked.signing_public_key is not None
        lockout = self._limiter.lockout_of(source, district)
        if lockout is not None:
            # The same work as any attempt (one scrypt), and not a row touched.
            verify_authorization_code(authorization_code[:MAX_CODE_LENGTH], self._dummy_hash)
            left = lockout.seconds_left(self._limiter.now())
            log.warning(
                "enrollment of district %s from %s refused: the source is locked out of %s "
                "for another %.0f s (not counted)",
                district,
                source,
                "every district" if lockout.district == EVERY_DISTRICT else "this district",
                left,
            )
            self._refuse_evenly(started)
        now = self._clock()
        refused_because: str | None = None
        result: EnrollResult | None = None
        with self._store.transaction() as tx:
            row = tx.get_district(district, for_update=True)
            stored = row.auth_code_hash if row is not None else None
            # Always one scrypt evaluation, whatever the outcome.
            matches = verify_authorization_code(
                authorization_code[:MAX_CODE_LENGTH], stored or self._dummy_hash
            )
            if row is None:
                refused_because = "unknown district"
            elif stored is None:
                refused_because = "no authorization code outstanding (consumed or revoked)"
            elif not matches or len(authorization_code) > MAX_CODE_LENGTH:
                refused_because = "wrong authorization code"
            if refused_because is not None:
                started_lockout = self._limiter.record_failure(source, district)
                if started_lockout is not None:
                    refused_because += "; " + _describe(started_lockout)
                if row is not None:
                    count = tx.record_failed_attempt(
                        district, locked_out_at=now if started_lockout is not None else None
                    )
                    refused_because += f" (failure {count} at this district)"
            elif row is not None and stored is not None:
                result = self._enroll_accepted(tx, row.name, district, stored, checked, now)
        if result is None:
            log.warning(
                "enrollment of district %s from %s refused: %s", district, source, refused_because
            )
            self._refuse_evenly(started)
        self._limiter.record_success(source, district)
        log.info("district %s enrolled (from %s)", district, source)
        return result

    def _refuse_evenly(self, started: float) -> NoReturn:
        """Refuse an enrollment no faster than the slowest of the recent refusals.

        Every refusal costs one scrypt, but a known district's also commits its
        failed-attempt count (a synced write) and an unknown district's does
        not: measured from outside, that difference would tell which district
        codes are registered. Padding each refusal to the slowest recent one
        makes them all take the same time, whatever was wrong.
        """
        elapsed = time.monotonic() - started
        with self._refusal_lock:
            self._refusal_seconds.append(min(elapsed, _MAX_REFUSAL_PAD_SECONDS))
            target = max(self._refusal_seconds)
        if target > elapsed:
            time.sleep(target - elapsed)
        raise EnrollmentRefused(REFUSED)

    def _enroll_accepted(
        self,
        tx: StoreTransaction,
        name: str,
        district: DistrictCode,
        stored_hash: str,
        checked: _CheckedKeys,
        now: datetime,
    ) -> EnrollResult:
        assert checked.csr is not None and checked.hpke is not None
        assert checked.signing_public_key is not None
        row = tx.require_district(district)
        endpoints = checked.endpoints or row.endpoints
        if not endpoints:
            raise InvalidInput(
                "keys.endpoints: give at least one host:port other districts can reach"
            )
        _refuse_endpoints_held(tx, district, endpoints)
        cert = self._ca.issue_district_certificate(checked.csr, district, self._cert_validity, now)
        if not tx.consume_authorization_code(district, stored_hash):
            raise EnrollmentRefused(REFUSED)  # a concurrent enrollment won the race
        current = tx.current_entry(district)
        suite, hpke_public = checked.hpke
        entry = DirectoryEntry(
            district_code=district,
            name=name,
            schools=tuple(School(cds_code=s, name=n) for s, n in tx.schools_of(district)),
            endpoints=endpoints,
            tls_spki_sha256=spki_sha256(cert),
            hpke_kem=suite.kem,
            hpke_kdf=suite.kdf,
            hpke_aead=suite.aead,
            hpke_public_key=hpke_public,
            hpke_key_id=key_id(suite, hpke_public),
            signing_public_key=checked.signing_public_key,
            status=DistrictStatus.ACTIVE,
            version=(current.version if current else 0) + 1,
            issued_at=now,
            expires_at=now + self._entry_validity,
        )
        envelope = self._store_entry(tx, entry)
        tx.set_district_state(district, status=STATUS_ACTIVE, endpoints=endpoints)
        return EnrollResult(
            certificate_pem=cert.public_bytes(Encoding.PEM),
            ca_certificate_pem=self._ca.certificate_pem,
            entry=envelope,
        )

    # -- authenticated districts ------------------------------------------

    def authenticate(self, cert: x509.Certificate | None) -> DistrictCode:
        """The district calling with ``cert``.

        Raises ``CallerNotAuthenticated`` without a district certificate, and
        ``PeerAuthError`` when the district is unknown, not active, or the
        certificate's key is not the one its current entry pins.
        """
        if cert is None:
            raise CallerNotAuthenticated("no client certificate")
        try:
            district = district_of_certificate(cert)
        except PeerAuthError as exc:
            raise CallerNotAuthenticated(str(exc)) from exc
        with self._store.transaction() as tx:
            row = tx.get_district(district)
            current = tx.current_entry(district)
        if row is None or current is None:
            raise PeerAuthError(f"district {district} has no directory entry")
        if row.status != STATUS_ACTIVE or current.status != STATUS_ACTIVE:
            raise PeerAuthError(f"district {district} is {row.status}")
        if not hmac.compare_digest(spki_sha256(cert), current.tls_spki_sha256):
            raise PeerAuthError(f"district {district} presented a key that is not its current one")
        return district

    def lookup(self, code: str) -> common_pb2.SignedEnvelope:
        """The current signed entry of ``code`` (active or revoked). Raises ``NotFound``."""
        district = parse_district_code(code)
        envelope = self._with_retry(lambda tx: self._current_envelope(tx, district))
        if envelope is None:
            raise NotFound(f"district {district} has no directory entry")
        return envelope

    def list_entries(self) -> list[common_pb2.SignedEnvelope]:
        """Every district's current signed entry."""

        def collect(tx: StoreTransaction) -> list[common_pb2.SignedEnvelope]:
            found = (self._current_envelope(tx, row.code) for row in tx.list_districts())
            return [e for e in found if e is not None]

        return self._with_retry(collect)

    def search_schools(self, query: str, limit: int = 0) -> list[SchoolRow]:
        """Schools of active districts by name substring or CDS-code prefix.

        Raises ``InvalidInput`` for an empty or overlong query.
        """
        text = query.strip()
        if not text or len(text) > _MAX_QUERY_LENGTH:
            raise InvalidInput(f"query: give 1 to {_MAX_QUERY_LENGTH} characters")
        if limit < 0:
            raise InvalidInput("limit: must not be negative")
        limit = min(limit or _DEFAULT_SEARCH_LIMIT, _MAX_SEARCH_LIMIT)
        with self._store.transaction() as tx:
            return tx.search_schools(text, limit)

    def update_entry(
        self, caller: DistrictCode, caller_cert: x509.Certificate, code: str, keys: KeySubmission
    ) -> EnrollResult:
        """Change the caller's own endpoints and/or keys; always returns a fresh certificate.

        A new CSR rotates the TLS key; without one the certificate is reissued
        for the key presented. Raises ``PeerAuthError`` when ``code`` is not
        the caller, ``InvalidInput`` for malformed keys or a new endpoint
        another active district holds (nothing is changed).
        """
        if code != caller:
            raise PeerAuthError(f"district {caller} asked to update the entry of {code!r}")
        checked = check_keys(keys, partial=True)
        now = self._clock()
        with self._store.transaction() as tx:
            row = tx.require_district(caller, for_update=True)
            current = tx.current_entry(caller)
            if current is None or row.status != STATUS_ACTIVE:
                raise PeerAuthError(f"district {caller} is not active")
            entry = _parse_stored(current)
            endpoints = checked.endpoints or entry.endpoints
            if checked.endpoints is not None:
                # Only endpoints asked for now: a key rotation must not be blocked
                # by a clash from before the registry checked endpoints.
                _refuse_endpoints_held(tx, caller, checked.endpoints)
            if checked.csr is not None:
                cert = self._ca.issue_district_certificate(
                    checked.csr, caller, self._cert_validity, now
                )
            else:
                public_key = caller_cert.public_key()
                if not isinstance(public_key, ec.EllipticCurvePublicKey):
                    raise InvalidInput("the current TLS key is not an EC key: send a new CSR")
                cert = self._ca.issue_district_certificate_for_key(
                    public_key, caller, self._cert_validity, now
                )
            suite, hpke_public = checked.hpke or (entry.hpke_suite, entry.hpke_public_key)
            new_entry = replace(
                entry,
                endpoints=endpoints,
                tls_spki_sha256=spki_sha256(cert),
                hpke_kem=suite.kem,
                hpke_kdf=suite.kdf,
                hpke_aead=suite.aead,
                hpke_public_key=hpke_public,
                hpke_key_id=key_id(suite, hpke_public),
                signing_public_key=checked.signing_public_key or entry.signing_public_key,
                version=current.version + 1,
                issued_at=now,
                expires_at=now + self._entry_validity,
            )
            envelope = self._store_entry(tx, new_entry)
            tx.set_district_state(caller, status=STATUS_ACTIVE, endpoints=endpoints)
        log.info(
            "district %s updated its entry (version %d%s)",
            caller,
            new_entry.version,
            ", new TLS key" if checked.csr is not None else "",
        )
        return EnrollResult(
            certificate_pem=cert.public_bytes(Encoding.PEM),
            ca_certificate_pem=self._ca.certificate_pem,
            entry=envelope,
        )

    # -- internals ---------------------------------------------------------

    def _with_retry(self, work: Callable[[StoreTransaction], _T]) -> _T:
        # A refresh racing another refresh of the same entry loses on the
        # primary key (same version); the second try reads the winner's row.
        for attempt in (1, 2):
            try:
                with self._store.transaction() as tx:
                    return work(tx)
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _current_envelope(
        self, tx: StoreTransaction, district: DistrictCode
    ) -> common_pb2.SignedEnvelope | None:
        current = tx.current_entry(district)
        if current is None:
            return None
        now = self._clock()
        if current.expires_at - now < self._entry_validity / 2:
            entry = replace(
                _parse_stored(current),
                version=current.version + 1,
                issued_at=now,
                expires_at=now + self._entry_validity,
            )
            return self._store_entry(tx, entry)
        return common_pb2.SignedEnvelope(
            body=current.body, signer_district=REGISTRY_SIGNER, signature=current.signature
        )

    def _store_entry(
        self, tx: StoreTransaction, entry: DirectoryEntry
    ) -> common_pb2.SignedEnvelope:
        body = entry.to_proto().SerializeToString(deterministic=True)
        signature = sign_body(LABEL_DIRECTORY_ENTRY, body, self._signing_key)
        tx.add_entry(
            EntryRow(
                district_code=entry.district_code,
                version=entry.version,
                body=body,
                signature=signature,
                status=STATUS_ACTIVE if entry.is_active else STATUS_REVOKED,
                tls_spki_sha256=entry.tls_spki_sha256,
                issued_at=entry.issued_at,
                expires_at=entry.expires_at,
            )
        )
        return common_pb2.SignedEnvelope(
            body=body, signer_district=REGISTRY_SIGNER, signature=signature
        )


def _parse_stored(row: EntryRow) -> DirectoryEntry:
    """An entry from our own database (signed by us; parsed, not re-verified)."""
    msg = common_pb2.DirectoryEntry()
    msg.ParseFromString(row.body)
    return DirectoryEntry.from_proto(msg)


def _refuse_endpoints_held(
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


def _check_name(what: str, name: str) -> str:
    text = " ".join(name.split())
    if not text or len(text) > _MAX_NAME_LENGTH or not text.isprintable():
        raise InvalidInput(f"{what}: give 1 to {_MAX_NAME_LENGTH} printable characters")
    return text


def _describe(lockout: Lockout) -> str:
    scope = "every district" if lockout.district == EVERY_DISTRICT else "this district"
    return (
        f"source {lockout.source} now locked out of {scope} for {lockout.seconds:.0f} s "
        f"(its lockout {lockout.lockouts})"
    )


# -- gRPC ----------------------------------------------------------------------


_Handler = TypeVar("_Handler", bound=Callable[..., Any])

CallerAuth = Callable[[grpc.ServicerContext], DistrictCode]


def _rpc(method: _Handler) -> _Handler:
    """Map the service's errors to status codes, in one place.

    Authentication failures are detail-free (the log has the reason); input
    errors carry their message, which only describes the caller's own request.
    """

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        name = method.__name__
        try:
            return method(self, request, context)
        except EnrollmentRefused:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)
        except CallerNotAuthenticated as exc:
            log.warning("%s: caller not authenticated: %s (peer %s)", name, exc, context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "not authorized")
        except PeerAuthError as exc:
            log.warning("%s: caller refused: %s (peer %s)", name, exc, context.peer())
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "not authorized")
        except InvalidInput as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except RecordsTransferError:
            log.exception("%s failed", name)
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "refused")
        except sa.exc.OperationalError:
            log.exception("%s: database unavailable", name)
            context.abort(grpc.StatusCode.UNAVAILABLE, "registry busy, try again later")

    return wrapper  # type: ignore[return-value]


class EnrollOnlyServicer(registry_pb2_grpc.RegistryServicer):
    """The enrollment listener's servicer: ``Enroll`` only, everything else UNIMPLEMENTED."""

    def __init__(self, service: RegistryService) -> None:
        self._service = service

    @_rpc
    def Enroll(  # noqa: N802 (gRPC's method name)
        self, request: registry_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> registry_pb2.EnrollResponse:
        result = self._service.enroll(
            request.district_code,
            request.authorization_code,
            KeySubmission.from_proto(request.keys),
            source=client_address(context.peer()),
        )
        return _enroll_response(result)

    # The other methods need a district certificate: they live on the mutual-TLS listener.
    def LookupDistrict(  # noqa: N802
        self, request: registry_pb2.LookupDistrictRequest, context: grpc.ServicerContext
    ) -> common_pb2.SignedEnvelope:
        _not_here(context)

    def SearchSchools(  # noqa: N802
        self, request: registry_pb2.SearchSchoolsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.SearchSchoolsResponse:
        _not_here(context)

    def ListDistricts(  # noqa: N802
        self, request: registry_pb2.ListDistrictsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListDistrictsResponse:
        _not_here(context)

    def UpdateEntry(  # noqa: N802
        self, request: registry_pb2.UpdateEntryRequest, context: grpc.ServicerContext
    ) -> registry_pb2.EnrollResponse:
        _not_here(context)


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    """The mutual-TLS listener's servicer: every method but ``Enroll``, for enrolled districts.

    ``caller_auth`` identifies the calling district from the call's context; the
    default reads the verified client certificate. Tests of the servicer alone
    (pytest-grpc, no TLS) substitute it.
    """

    def __init__(self, service: RegistryService, caller_auth: CallerAuth | None = None) -> None:
        self._service = service
        self._caller_auth = caller_auth or self._caller_from_certificate

    def Enroll(  # noqa: N802
        self, request: registry_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> registry_pb2.EnrollResponse:
        _not_here(context)  # served on the enrollment listener only

    def _caller_from_certificate(self, context: grpc.ServicerContext) -> DistrictCode:
        return self._service.authenticate(peer_certificate(context.auth_context()))

    @_rpc
    def LookupDistrict(  # noqa: N802
        self, request: registry_pb2.LookupDistrictRequest, context: grpc.ServicerContext
    ) -> common_pb2.SignedEnvelope:
        self._caller_auth(context)
        return self._service.lookup(request.district_code)

    @_rpc
    def SearchSchools(  # noqa: N802
        self, request: registry_pb2.SearchSchoolsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.SearchSchoolsResponse:
        self._caller_auth(context)
        rows = self._service.search_schools(request.query, request.limit)
        return registry_pb2.SearchSchoolsResponse(
            schools=[
                registry_pb2.SchoolMatch(
                    cds_code=r.cds_code,
                    name=r.name,
                    district_code=r.district_code,
                    district_name=r.district_name,
                )
                for r in rows
            ]
        )

    @_rpc
    def ListDistricts(  # noqa: N802
        self, request: registry_pb2.ListDistrictsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListDistrictsResponse:
        self._caller_auth(context)
        return registry_pb2.ListDistrictsResponse(entries=self._service.list_entries())

    @_rpc
    def UpdateEntry(  # noqa: N802
        self, request: registry_pb2.UpdateEntryRequest, context: grpc.ServicerContext
    ) -> registry_pb2.EnrollResponse:
        caller = self._caller_auth(context)
        cert = peer_certificate(context.auth_context())
        if cert is None:
            raise CallerNotAuthenticated("no client certificate")
        result = self._service.update_entry(
            caller, cert, request.district_code, KeySubmission.from_proto(request.keys)
        )
        return _enroll_response(result)


def _not_here(context: grpc.ServicerContext) -> NoReturn:
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served on this listener")
    raise AssertionError("unreachable: context.abort raises")


def _enroll_response(result: EnrollResult) -> registry_pb2.EnrollResponse:
    return registry_pb2.EnrollResponse(
        certificate_pem=result.certificate_pem,
        ca_certificate_pem=result.ca_certificate_pem,
        entry=result.entry,
    )
