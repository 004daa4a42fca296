"""The registry's rules, over its store, its CA and its signing key; no gRPC here.

``RegistryService`` holds every rule (``registry.servicer`` is the thin gRPC
front, translating proto <-> domain and errors to status codes):

- **Enroll** binds freshly generated district keys to a district code, against
  a single-use authorization code, with failed attempts locking out their
  source, never the district: ``registry.enrollment``.
- **Endpoints** are each held by one active district at a time: ``district
  add``, ``Enroll`` and ``UpdateEntry`` refuse a ``host:port`` another active
  district already publishes (``InvalidInput``; ``registry.submission``).
- **Callers** of every other method are districts identified by the one URI
  SAN of their certificate *and* a key equal to the one their current, active
  entry pins: a revoked district or a rotated-away certificate is refused.
- **Entries** are signed with the registry's Ed25519 key; every change is a new
  version, re-signed at half-life (``registry.entries``).
- **Caches**: a caller's verified certificate and each district's current signed
  entry are kept for ``cache_seconds`` (``CACHE_SECONDS``, 1 s). Every change made
  through this service clears both at once; a change made by another process on
  the same database (the ``rt-registry district revoke`` command, a replica) is
  served within ``cache_seconds``. An entry past half its validity is never
  served from the cache (it is re-signed first).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from protos.rt.v1 import common_pb2
from registry._cache import BoundedCache
from registry._limiter import MonotonicClock
from registry.authcode import hash_authorization_code, new_authorization_code
from registry.ca import RegistryCA
from registry.enrollment import Enrollment, EnrollResult
from registry.entries import EntrySigner, parse_stored, retire_signing_key
from registry.store import (
    STATUS_ACTIVE,
    STATUS_PENDING,
    STATUS_REVOKED,
    RegistryStore,
    SchoolRow,
    StoreTransaction,
)
from registry.submission import (
    MAX_ENDPOINTS,
    KeySubmission,
    check_endpoints,
    check_keys,
    refuse_endpoints_held,
)
from registry.tlog import AuditReport, DirectoryLog
from rt_client.checkpoint import parse_verifier_key
from rt_client.config import RegistryConfig
from rt_client.crypto.hpke import key_id
from rt_client.directory import Clock, DistrictStatus, utc_now
from rt_client.errors import CallerNotAuthenticated, InvalidInput, NotFound, PeerAuthError
from rt_client.ids import (
    DistrictCode,
    SchoolCode,
    district_of_school,
    parse_district_code,
    parse_school_code,
)
from rt_client.tls import district_of_certificate, spki_sha256

__all__ = [
    "CACHE_SECONDS",
    "MAX_ENDPOINTS",
    "STATUS_ACTIVE",
    "STATUS_PENDING",
    "STATUS_REVOKED",
    "CallerNotAuthenticated",
    "DistrictSummary",
    "EnrollResult",
    "KeySubmission",
    "RegistryService",
    "check_endpoints",
    "check_keys",
]

log = logging.getLogger("registry.service")

_MAX_NAME_LENGTH: Final = 200
_MAX_QUERY_LENGTH: Final = 100
_DEFAULT_SEARCH_LIMIT: Final = 20
_MAX_SEARCH_LIMIT: Final = 100
# How long a change made by another process may take to be served (module docstring).
CACHE_SECONDS: Final = 1.0

_T = TypeVar("_T")


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
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        """``clock`` dates what is stored and signed; ``monotonic`` times lockouts and caches.

        ``cache_seconds``: how long a verified caller and a signed entry are
        reused (0: never), so how late a change by another process is seen.
        """
        self._store = store
        self._ca = ca
        self._config = config
        self._clock = clock
        self._cert_validity = timedelta(days=config.certificate_validity_days)
        self._entries = EntrySigner(signing_key, timedelta(days=config.entry_validity_days), clock)
        self._enrollment = Enrollment(store, ca, self._entries, config, clock, monotonic)
        self._half_validity = timedelta(days=config.entry_validity_days) / 2
        # certificate SHA-256 -> its district, verified against the database
        self._callers: BoundedCache[bytes, DistrictCode] = BoundedCache(cache_seconds, monotonic)
        # district -> (its current signed entry, when that entry expires)
        self._current: BoundedCache[DistrictCode, tuple[common_pb2.SignedEnvelope, datetime]] = (
            BoundedCache(cache_seconds, monotonic)
        )
        self._log = DirectoryLog(signing_key, [parse_verifier_key(k) for k in config.witness_keys])

    @property
    def ca(self) -> RegistryCA:
        return self._ca

    @property
    def signing_public_key(self) -> bytes:
        return self._entries.public_key

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
        with self._changing(), self._store.transaction() as tx:
            refuse_endpoints_held(tx, district, checked)
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
        with self._changing(), self._store.transaction() as tx:
            row = tx.require_district(district, for_update=True)
            if row.status == STATUS_REVOKED:
                return False
            tx.set_district_state(district, status=STATUS_REVOKED)
            tx.set_authorization_code(district, None)
            current = tx.current_entry(district)
            if current is not None:
                entry = replace(
                    parse_stored(current),
                    status=DistrictStatus.REVOKED,
                    version=current.version + 1,
                    issued_at=now,
                    expires_at=self._entries.expiry(now),
                )
                self._entries.store(tx, entry)
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
        """Bind ``keys`` to district ``code``: ``registry.enrollment.Enrollment.enroll``.

        Raises ``InvalidInput`` and ``EnrollmentRefused``, as that method says.
        """
        result = self._enrollment.enroll(code, authorization_code, keys, source=source)
        # Only a success changes an entry: refused attempts (an attacker's) clear nothing.
        self._callers.clear()
        self._current.clear()
        return result

    # -- authenticated districts ------------------------------------------

    def authenticate(self, cert: x509.Certificate | None) -> DistrictCode:
        """The district calling with ``cert``.

        Raises ``CallerNotAuthenticated`` without a district certificate, and
        ``PeerAuthError`` when the district is unknown, not active, or the
        certificate's key is not the one its current entry pins.
        """
        if cert is None:
            raise CallerNotAuthenticated("no client certificate")
        fingerprint = cert.fingerprint(hashes.SHA256())
        known = self._callers.get(fingerprint)
        if known is not None:
            return known
        token = self._callers.begin()
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
        self._callers.put(fingerprint, district, token)
        return district

    def lookup(self, code: str) -> common_pb2.SignedEnvelope:
        """The current signed entry of ``code`` (active or revoked). Raises ``NotFound``."""
        district = parse_district_code(code)
        cached = self._current.get(district)
        if cached is not None and cached[1] - self._clock() >= self._half_validity:
            return _copy(cached[0])
        token = self._current.begin()
        envelope = self._with_retry(lambda tx: self._entries.current(tx, district))
        if envelope is None:
            raise NotFound(f"district {district} has no directory entry")
        expires_at = common_pb2.DirectoryEntry.FromString(envelope.body).expires_at.ToDatetime(
            tzinfo=UTC
        )
        self._current.put(district, (_copy(envelope), expires_at), token)
        return envelope

    def list_entries(self) -> list[common_pb2.SignedEnvelope]:
        """Every district's current signed entry."""

        def collect(tx: StoreTransaction) -> list[common_pb2.SignedEnvelope]:
            found = (self._entries.current(tx, row.code) for row in tx.list_districts())
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
        with self._changing(), self._store.transaction() as tx:
            row = tx.require_district(caller, for_update=True)
            current = tx.current_entry(caller)
            if current is None or row.status != STATUS_ACTIVE:
                raise PeerAuthError(f"district {caller} is not active")
            entry = parse_stored(current)
            endpoints = checked.endpoints or entry.endpoints
            if checked.endpoints is not None:
                # Only endpoints asked for now: a key rotation must not be blocked
                # by a clash from before the registry checked endpoints.
                refuse_endpoints_held(tx, caller, checked.endpoints)
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
                previous_signing_keys=retire_signing_key(
                    entry,
                    checked.signing_public_key,
                    now,
                    timedelta(days=self._config.previous_signing_key_days),
                ),
                version=current.version + 1,
                issued_at=now,
                expires_at=self._entries.expiry(now),
            )
            envelope = self._entries.store(tx, new_entry)
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

    # -- the directory log (registry.tlog) ------------------------------------

    @property
    def log_origin(self) -> str:
        return self._log.verifier.name

    def checkpoint(self, min_cosignatures: int = 0) -> bytes:
        """The newest signed checkpoint note (with that many cosignatures). Raises ``NotFound``."""
        return self._with_retry(lambda tx: self._log.witnessed(tx, min_cosignatures))

    def inclusion_proof(self, code: str, version: int, tree_size: int) -> tuple[int, list[bytes]]:
        """(leaf index, audit path). Raises ``NotFound`` / ``InvalidInput``."""
        district = parse_district_code(code)
        with self._store.transaction() as tx:
            return self._log.inclusion(tx, district, version, tree_size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Raises ``InvalidInput`` for sizes outside the log."""
        with self._store.transaction() as tx:
            return self._log.consistency(tx, old_size, new_size)

    def add_cosignatures(self, cosigned: bytes) -> tuple[int, int]:
        """Keep a witness's cosignature of a published checkpoint: (tree size, lines left out).

        Raises ``IntegrityError``.
        """
        with self._store.transaction() as tx:
            return self._log.add_cosignatures(tx, cosigned)

    def audit_log(self) -> AuditReport:
        """``rt-registry log verify``: every leaf and the latest checkpoint recomputed."""
        with self._store.transaction() as tx:
            return self._log.audit(tx)

    # -- internals ---------------------------------------------------------

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Around a write and its commit: the caches are cleared before, and again after.

        Enter it before the transaction, so it is left after the commit: the
        second clear also voids every read that began before the commit
        (``BoundedCache.put``), so none can cache the old state.
        """
        self._callers.clear()
        self._current.clear()
        try:
            yield
        finally:
            self._callers.clear()
            self._current.clear()

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


def _copy(envelope: common_pb2.SignedEnvelope) -> common_pb2.SignedEnvelope:
    """A cached envelope is never handed out itself: a caller may change what it gets."""
    copy = common_pb2.SignedEnvelope()
    copy.CopyFrom(envelope)
    return copy


def _check_name(what: str, name: str) -> str:
    text = " ".join(name.split())
    if not text or len(text) > _MAX_NAME_LENGTH or not text.isprintable():
        raise InvalidInput(f"{what}: give 1 to {_MAX_NAME_LENGTH} printable characters")
    return text
