"""Enrollment: a district's fresh keys bound to its code, against its authorization code.

- The authorization code is compared in constant time against its scrypt
  hash; an unknown district is hashed against a dummy so timing does not
  reveal which districts exist. A code is single use: a successful enrollment
  consumes it, and a later re-enrollment (new keys, higher version) needs
  ``RegistryService.rotate_code``.
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
  and padded to the same time (``Enrollment._refuse_evenly``); the reason and
  the caller's address go to the log.
- **Asking again is safe** (``Enrollment._answer_again``): keys exactly equal to
  those of the district's current active entry, with a CSR signed by the pinned
  TLS key, get a fresh certificate for that key and the current entry, with no
  authorization code. A district that died between our answer and saving its
  keys (``rt enroll``, or a key rotation) finishes that way instead of burning
  its code.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, NoReturn

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protos.rt.v1 import common_pb2
from registry._limiter import EVERY_DISTRICT, EnrollmentLimiter, Lockout, MonotonicClock
from registry.authcode import (
    MAX_CODE_LENGTH,
    hash_authorization_code,
    new_authorization_code,
    verify_authorization_code,
)
from registry.ca import RegistryCA
from registry.entries import EntrySigner, parse_stored
from registry.store import STATUS_ACTIVE, RegistryStore, StoreTransaction
from registry.submission import CheckedKeys, KeySubmission, check_keys, refuse_endpoints_held
from rt_client.config import RegistryConfig
from rt_client.crypto.hpke import key_id
from rt_client.directory import Clock, DirectoryEntry, DistrictStatus, School
from rt_client.errors import EnrollmentRefused, InvalidInput
from rt_client.ids import DistrictCode, parse_district_code
from rt_client.tls import spki_sha256

__all__ = ["REFUSED", "EnrollResult", "Enrollment"]

# The registry's rules log under one name, whichever module applies them.
log = logging.getLogger("registry.service")

REFUSED: Final = "enrollment refused"
# Refusals are padded to the slowest of the last _REFUSAL_WINDOW, at most this long.
_REFUSAL_WINDOW: Final = 32
_MAX_REFUSAL_PAD_SECONDS: Final = 2.0


@dataclass(frozen=True)
class EnrollResult:
    """What an enrolled (or updated) district gets back."""

    certificate_pem: bytes
    ca_certificate_pem: bytes
    entry: common_pb2.SignedEnvelope


class Enrollment:
    """The ``Enroll`` rule: see the module docstring."""

    def __init__(
        self,
        store: RegistryStore,
        ca: RegistryCA,
        entries: EntrySigner,
        config: RegistryConfig,
        clock: Clock,
        monotonic: MonotonicClock,
    ) -> None:
        self._store = store
        self._ca = ca
        self._entries = entries
        self._clock = clock
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
        replay: EnrollResult | None = None
        with self._store.transaction() as tx:
            row = tx.get_district(district, for_update=True)
            stored = row.auth_code_hash if row is not None else None
            # Always one scrypt evaluation, whatever the outcome.
            matches = verify_authorization_code(
                authorization_code[:MAX_CODE_LENGTH], stored or self._dummy_hash
            )
            # Not once the operator issued a new code (rotate-code): from then on
            # only that code enrolls, whoever holds the pinned keys.
            replay = (
                self._answer_again(tx, district, checked, now)
                if row is not None and row.status == STATUS_ACTIVE and stored is None
                else None
            )
            if replay is not None:
                result = replay
            elif row is None:
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
        if replay is not None:
            log.info("district %s fetched its enrollment answer again (from %s)", district, source)
            return replay
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

    def _answer_again(
        self, tx: StoreTransaction, district: DistrictCode, checked: CheckedKeys, now: datetime
    ) -> EnrollResult | None:
        """The answer again for keys the district's current entry already carries, else None.

        A district that died between our answer and saving its keys (enrollment
        or rotation) asks again with the same keys. The CSR is signed by the
        TLS key the entry pins, which proves the caller holds it: that is the
        same proof a mutual-TLS call gives, so no authorization code is needed
        (and none is consumed or counted). Nothing changes but a fresh
        certificate for the pinned key. Never while an authorization code is
        outstanding (the caller checks): an operator who issued a new code wants
        the district enrolled with it, not with keys someone may have copied.
        """
        assert checked.csr is not None and checked.hpke is not None
        current = tx.current_entry(district)
        if current is None or current.status != STATUS_ACTIVE:
            return None
        entry = parse_stored(current)
        csr_spki = hashlib.sha256(
            checked.csr.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        ).digest()
        suite, hpke_public = checked.hpke
        same = (
            hmac.compare_digest(csr_spki, current.tls_spki_sha256)
            and (suite.kem, suite.kdf, suite.aead)
            == (entry.hpke_kem, entry.hpke_kdf, entry.hpke_aead)
            and hmac.compare_digest(hpke_public, entry.hpke_public_key)
            and checked.signing_public_key == entry.signing_public_key
            and (checked.endpoints is None or tuple(checked.endpoints) == entry.endpoints)
        )
        if not same:
            return None
        cert = self._ca.issue_district_certificate(checked.csr, district, self._cert_validity, now)
        envelope = self._entries.current(tx, district)
        assert envelope is not None
        return EnrollResult(
            certificate_pem=cert.public_bytes(Encoding.PEM),
            ca_certificate_pem=self._ca.certificate_pem,
            entry=envelope,
        )

    def _enroll_accepted(
        self,
        tx: StoreTransaction,
        name: str,
        district: DistrictCode,
        stored_hash: str,
        checked: CheckedKeys,
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
        refuse_endpoints_held(tx, district, endpoints)
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
            expires_at=self._entries.expiry(now),
        )
        envelope = self._entries.store(tx, entry)
        tx.set_district_state(district, status=STATUS_ACTIVE, endpoints=endpoints)
        return EnrollResult(
            certificate_pem=cert.public_bytes(Encoding.PEM),
            ca_certificate_pem=self._ca.certificate_pem,
            entry=envelope,
        )


def _describe(lockout: Lockout) -> str:
    scope = "every district" if lockout.district == EVERY_DISTRICT else "this district"
    return (
        f"source {lockout.source} now locked out of {scope} for {lockout.seconds:.0f} s "
        f"(its lockout {lockout.lockouts})"
    )
