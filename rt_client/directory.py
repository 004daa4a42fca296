"""The signed directory: verifying registry entries and a caching client for them.

A directory entry is the registry's signed statement of who a district is:
its endpoints, the SHA-256 of its TLS key, its HPKE and signing keys, its status
and a version that only ever increases (DESIGN.md section 3). Nothing in an
entry is believed before the registry's Ed25519 signature over it verifies
against the key pinned in the district's config.

``DirectoryClient`` adds what a long-running server needs on top:
a short cache, refusal of rollbacks to an older version, refusal of revoked
districts, and -- the reliability story -- an unreachable registry does not stop
transfers while the last entry we verified is still within its validity.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from protos.rt.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from rt_client.crypto.envelope import LABEL_DIRECTORY_ENTRY, verify_body
from rt_client.crypto.hpke import HpkeSuite, key_id, suite_from_names
from rt_client.errors import (
    DirectoryError,
    IntegrityError,
    InvalidInput,
    PeerUnavailable,
    RegistryError,
)
from rt_client.ids import (
    DistrictCode,
    SchoolCode,
    district_of_school,
    parse_district_code,
    parse_school_code,
)
from rt_client.signed_messages import PreviousSigningKey
from rt_client.status_codes import Remote, error_from_rpc
from rt_client.tlog import LogVerifier
from rt_client.tls import REGISTRY_SERVER_NAME, TlsIdentity, secure_channel

__all__ = [
    "CLOCK_SKEW",
    "REGISTRY_SIGNER",
    "Clock",
    "RegistryLogFetcher",
    "Directory",
    "DirectoryClient",
    "DirectoryEntry",
    "DistrictStatus",
    "School",
    "SchoolMatch",
    "from_timestamp",
    "registry_channel",
    "to_timestamp",
    "utc_now",
    "verify_entry",
]

log = logging.getLogger("rt_client.directory")

REGISTRY_SIGNER: Final = "registry"
# How far apart the registry's clock and ours may be before an entry's
# validity window is enforced against us.
CLOCK_SKEW: Final = timedelta(minutes=2)
_DEFAULT_TIMEOUT: Final = 10.0
# While the registry is unreachable, how often to try it again for a district
# whose cached entry is still valid (and in use meanwhile).
_OUTAGE_RETRY: Final = timedelta(seconds=30)
# gRPC's own reconnect backoff grows to 120 s while the registry is down, and
# calls fail at once in between: capped, so that a registry that comes back is
# reached within seconds (as rt_client.peers does for districts).
_RECONNECT_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 1_000),
    ("grpc.max_reconnect_backoff_ms", 10_000),
)
_SHA256_SIZE: Final = 32
_ED25519_KEY_SIZE: Final = 32

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware (a seam tests replace)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class DistrictStatus(enum.Enum):
    ACTIVE = "active"
    REVOKED = "revoked"


_STATUS_FROM_PROTO: Final = {
    common_pb2.DISTRICT_STATUS_ACTIVE: DistrictStatus.ACTIVE,
    common_pb2.DISTRICT_STATUS_REVOKED: DistrictStatus.REVOKED,
}
_STATUS_TO_PROTO: Final = {v: k for k, v in _STATUS_FROM_PROTO.items()}


@dataclass(frozen=True)
class School:
    cds_code: SchoolCode
    name: str


@dataclass(frozen=True)
class SchoolMatch:
    """A school found by ``search_schools``: unsigned, only a pointer to a district to look up."""

    cds_code: SchoolCode
    name: str
    district_code: DistrictCode
    district_name: str


@dataclass(frozen=True)
class DirectoryEntry:
    """A verified directory entry (the domain form of ``rt.v1.DirectoryEntry``)."""

    district_code: DistrictCode
    name: str
    schools: tuple[School, ...]
    endpoints: tuple[str, ...]
    tls_spki_sha256: bytes
    hpke_kem: str
    hpke_kdf: str
    hpke_aead: str
    hpke_public_key: bytes = field(repr=False)
    hpke_key_id: str
    signing_public_key: bytes
    status: DistrictStatus
    version: int
    issued_at: datetime
    expires_at: datetime
    # Keys rotated away from, newest first (rt_client.signed_messages).
    previous_signing_keys: tuple[PreviousSigningKey, ...] = ()

    @property
    def is_active(self) -> bool:
        return self.status is DistrictStatus.ACTIVE

    @property
    def hpke_suite(self) -> HpkeSuite:
        """The entry's HPKE suite. Raises ``InvalidInput`` if unsupported."""
        return suite_from_names(self.hpke_kem, self.hpke_kdf, self.hpke_aead)

    @classmethod
    def from_proto(cls, msg: common_pb2.DirectoryEntry) -> DirectoryEntry:
        """Check and convert a parsed entry. Raises ``InvalidInput`` if it is malformed."""
        code = parse_district_code(msg.district_code)
        status = _STATUS_FROM_PROTO.get(msg.status)
        if status is None:
            raise InvalidInput("directory entry has no valid status")
        if msg.version < 1:
            raise InvalidInput("directory entry has no version")
        if not msg.HasField("issued_at") or not msg.HasField("expires_at"):
            raise InvalidInput("directory entry has no validity period")
        issued_at, expires_at = from_timestamp(msg.issued_at), from_timestamp(msg.expires_at)
        if expires_at <= issued_at:
            raise InvalidInput("directory entry expires before it is issued")
        if len(msg.previous_signing_keys) > _MAX_PREVIOUS_KEYS:
            raise InvalidInput("directory entry lists too many previous signing keys")
        schools = []
        for school in msg.schools:
            cds = parse_school_code(school.cds_code)
            if district_of_school(cds) != code:
                raise InvalidInput("directory entry lists a school of another district")
            schools.append(School(cds_code=cds, name=school.name))
        if status is DistrictStatus.ACTIVE:
            # An active entry is used to authenticate and encrypt: every key
            # must be there and consistent. A revoked one is only refused.
            if len(msg.tls_spki_sha256) != _SHA256_SIZE:
                raise InvalidInput("directory entry has no TLS key pin")
            if len(msg.signing_public_key) != _ED25519_KEY_SIZE:
                raise InvalidInput("directory entry has no signing key")
            if not msg.endpoints:
                raise InvalidInput("directory entry has no endpoint")
            suite = suite_from_names(msg.hpke_kem, msg.hpke_kdf, msg.hpke_aead)
            if msg.hpke_key_id != key_id(suite, msg.hpke_public_key):
                raise InvalidInput("directory entry's HPKE key id does not match its key")
        return cls(
            district_code=code,
            name=msg.name,
            schools=tuple(schools),
            endpoints=tuple(msg.endpoints),
            tls_spki_sha256=bytes(msg.tls_spki_sha256),
            hpke_kem=msg.hpke_kem,
            hpke_kdf=msg.hpke_kdf,
            hpke_aead=msg.hpke_aead,
            hpke_public_key=bytes(msg.hpke_public_key),
            hpke_key_id=msg.hpke_key_id,
            signing_public_key=bytes(msg.signing_public_key),
            status=status,
            version=msg.version,
            issued_at=issued_at,
            expires_at=expires_at,
            previous_signing_keys=tuple(_previous_key(k) for k in msg.previous_signing_keys),
        )

    def to_proto(self) -> common_pb2.DirectoryEntry:
        return common_pb2.DirectoryEntry(
            district_code=self.district_code,
            name=self.name,
            schools=[common_pb2.School(cds_code=s.cds_code, name=s.name) for s in self.schools],
            endpoints=list(self.endpoints),
            tls_spki_sha256=self.tls_spki_sha256,
            hpke_kem=self.hpke_kem,
            hpke_kdf=self.hpke_kdf,
            hpke_aead=self.hpke_aead,
            hpke_public_key=self.hpke_public_key,
            hpke_key_id=self.hpke_key_id,
            signing_public_key=self.signing_public_key,
            status=_STATUS_TO_PROTO[self.status],
            version=self.version,
            issued_at=to_timestamp(self.issued_at),
            expires_at=to_timestamp(self.expires_at),
            previous_signing_keys=[
                common_pb2.PreviousSigningKey(
                    public_key=k.public_key,
                    not_after=to_timestamp(k.not_after),
                    expires_at=to_timestamp(k.expires_at),
                )
                for k in self.previous_signing_keys
            ],
        )


_MAX_PREVIOUS_KEYS: Final = 8


def _previous_key(msg: common_pb2.PreviousSigningKey) -> PreviousSigningKey:
    if len(msg.public_key) != _ED25519_KEY_SIZE:
        raise InvalidInput("directory entry lists a previous signing key of the wrong size")
    if not msg.HasField("not_after") or not msg.HasField("expires_at"):
        raise InvalidInput("directory entry lists a previous signing key without its dates")
    return PreviousSigningKey(
        public_key=bytes(msg.public_key),
        not_after=from_timestamp(msg.not_after),
        expires_at=from_timestamp(msg.expires_at),
    )


def to_timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(UTC))
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def verify_entry(
    envelope: common_pb2.SignedEnvelope,
    pinned_key: bytes,
    now: datetime,
    *,
    expected_code: str | None = None,
) -> DirectoryEntry:
    """Verify a registry-signed entry and return it (active or revoked).

    The signature is checked before a byte of the body is parsed. Raises
    ``DirectoryError`` if the signer is not the registry, the signature does
    not verify against ``pinned_key``, the body is malformed, the entry is
    outside its validity period (beyond ``CLOCK_SKEW``), or it names another
    district than ``expected_code``. Revocation is the caller's to refuse.
    """
    if envelope.signer_district != REGISTRY_SIGNER:
        raise DirectoryError("directory entry is not signed by the registry")
    try:
        verify_body(LABEL_DIRECTORY_ENTRY, envelope.body, envelope.signature, pinned_key)
    except (IntegrityError, InvalidInput) as exc:
        raise DirectoryError(
            "directory entry signature does not verify against the pinned registry key "
            "(tampered entry, or registry_signing_key in the config is wrong)"
        ) from exc
    msg = common_pb2.DirectoryEntry()
    try:
        msg.ParseFromString(envelope.body)
        entry = DirectoryEntry.from_proto(msg)
    except (DecodeError, InvalidInput) as exc:
        raise DirectoryError("directory entry is signed but malformed") from exc
    if expected_code is not None and entry.district_code != expected_code:
        raise DirectoryError(
            f"the registry answered for district {entry.district_code}, not {expected_code}"
        )
    if now < entry.issued_at - CLOCK_SKEW:
        raise DirectoryError(
            f"directory entry of district {entry.district_code} is not valid yet "
            "(is this server's clock right?)"
        )
    if now >= entry.expires_at + CLOCK_SKEW:
        raise DirectoryError(
            f"directory entry of district {entry.district_code} expired at "
            f"{entry.expires_at:%Y-%m-%d %H:%M} UTC"
        )
    return entry


class Directory(Protocol):
    """What servers need from the directory: a district's current, verified, active entry."""

    def lookup(self, code: str) -> DirectoryEntry:
        """Raises ``DirectoryError`` (refused) or ``PeerUnavailable`` (registry unreachable)."""
        ...


LookupFn = Callable[[DistrictCode], common_pb2.SignedEnvelope]
"""Fetches a district's signed entry. Raises ``PeerUnavailable`` when the registry
cannot be reached, ``DirectoryError`` when it has no such district."""

SearchFn = Callable[[str, int], list[SchoolMatch]]


@dataclass(frozen=True)
class _Cached:
    entry: DirectoryEntry
    fetched_at: datetime


class DirectoryClient:
    """A thread-safe, caching, rollback-refusing view of the registry's directory.

    Entries are cached for ``ttl_seconds``: this is how long a revocation may
    take to reach us. When the registry cannot be reached, a cached entry is
    used for as long as it is itself valid (its ``expires_at``), even past the
    TTL, so a registry outage does not stop transfers between districts.
    """

    def __init__(
        self,
        lookup_fn: LookupFn,
        pinned_key: bytes,
        *,
        ttl_seconds: float = 300,
        clock: Clock = utc_now,
        search_fn: SearchFn | None = None,
        log: LogVerifier | None = None,
    ) -> None:
        """With ``log``, an entry is accepted only if it is in the registry's log
        (``rt_client.tlog``), which also keeps the rollback floor across restarts."""
        if len(pinned_key) != _ED25519_KEY_SIZE:
            raise InvalidInput("the pinned registry key must be 32 bytes")
        self._lookup_fn = lookup_fn
        self._search_fn = search_fn
        self._log = log
        self._pinned_key = bytes(pinned_key)
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[DistrictCode, _Cached] = {}
        # Highest version (and its signed body) ever verified, per district. Kept
        # after the cache entry goes: rollback protection must outlive the TTL.
        self._highest: dict[DistrictCode, tuple[int, bytes]] = {}
        # One fetch at a time per district, so two racing fetches cannot look
        # like a rollback to each other.
        self._fetch_locks: dict[DistrictCode, threading.Lock] = {}
        # When each cached entry was last verified with the registry (unlike
        # ``_Cached.fetched_at``, not moved on during an outage): for metrics.
        self._verified_at: dict[DistrictCode, datetime] = {}

    @classmethod
    def for_registry(
        cls,
        channel: grpc.Channel | Callable[[], grpc.Channel],
        pinned_key: bytes,
        *,
        ttl_seconds: float = 300,
        clock: Clock = utc_now,
        timeout: float = _DEFAULT_TIMEOUT,
        log: LogVerifier | None = None,
    ) -> DirectoryClient:
        """A client that asks the registry over ``channel`` (see ``registry_channel``).

        ``channel`` may be a function returning the channel to use for each call,
        so a server that renews its certificate swaps in a channel presenting it.
        """
        current = channel if callable(channel) else (lambda: channel)

        def stub() -> registry_pb2_grpc.RegistryStub:
            return registry_pb2_grpc.RegistryStub(current())

        def lookup(code: DistrictCode) -> common_pb2.SignedEnvelope:
            request = registry_pb2.LookupDistrictRequest(district_code=code)
            used = current()
            try:
                envelope: common_pb2.SignedEnvelope = _call_registry(
                    lambda: registry_pb2_grpc.RegistryStub(used).LookupDistrict(
                        request, timeout=timeout
                    ),
                    code,
                )
            except RegistryError:
                # Refused because our own key was renewed during the call? Then
                # the channel has changed (``current`` waits for the swap): once more.
                again = current()
                if again is used:
                    raise
                envelope = _call_registry(
                    lambda: registry_pb2_grpc.RegistryStub(again).LookupDistrict(
                        request, timeout=timeout
                    ),
                    code,
                )
            return envelope

        def search(query: str, limit: int) -> list[SchoolMatch]:
            request = registry_pb2.SearchSchoolsRequest(query=query, limit=limit)
            response = _call_registry(lambda: stub().SearchSchools(request, timeout=timeout), None)
            return [_school_match(m) for m in response.schools]

        return cls(
            lookup, pinned_key, ttl_seconds=ttl_seconds, clock=clock, search_fn=search, log=log
        )

    def lookup(self, code: str) -> DirectoryEntry:
        """The current verified entry of an active district.

        Raises ``DirectoryError`` for a malformed code, an entry that does not
        verify, a rollback, a revoked or unregistered district; ``PeerUnavailable``
        when the registry cannot be reached and no valid entry is cached.
        """
        try:
            district = parse_district_code(code)
        except InvalidInput as exc:
            raise DirectoryError(str(exc)) from exc
        now = self._clock()
        with self._lock:
            cached = self._cache.get(district)
            fetch_lock = self._fetch_locks.setdefault(district, threading.Lock())
        if cached is not None and self._fresh(cached, now):
            return _usable(cached.entry)
        with fetch_lock:
            with self._lock:
                cached = self._cache.get(district)
            now = self._clock()
            if cached is not None and self._fresh(cached, now):
                return _usable(cached.entry)  # another thread fetched it meanwhile
            try:
                envelope = self._lookup_fn(district)
            except PeerUnavailable as exc:
                if cached is not None and now < cached.entry.expires_at:
                    log.warning(
                        "registry unreachable; using cached entry of district %s (version %d, "
                        "valid until %s)",
                        district,
                        cached.entry.version,
                        cached.entry.expires_at.isoformat(),
                    )
                    # Ask again only after a while: an unreachable registry can
                    # cost a whole call timeout per attempt, and every peer call
                    # looks its peer up.
                    retry_in = min(self._ttl, _OUTAGE_RETRY)
                    with self._lock:
                        self._cache[district] = _Cached(
                            entry=cached.entry, fetched_at=now - self._ttl + retry_in
                        )
                    return _usable(cached.entry)
                raise PeerUnavailable(
                    f"the registry cannot be reached and no valid entry of district {district} "
                    "is cached; try again later"
                ) from exc
            entry = verify_entry(envelope, self._pinned_key, now, expected_code=district)
            if self._log is not None:
                # Floor, checkpoint, consistency and inclusion: rt_client.tlog (persisted).
                self._log.accept_entry(district, entry.version, bytes(envelope.body))
                with self._lock:
                    self._cache[district] = _Cached(entry=entry, fetched_at=now)
                return _usable(entry)
            with self._lock:
                highest = self._highest.get(district)
                if highest is not None:
                    if entry.version < highest[0]:
                        log.warning(
                            "refused directory entry of district %s: version %d is older than "
                            "version %d already seen",
                            district,
                            entry.version,
                            highest[0],
                        )
                        raise DirectoryError(
                            f"the registry served an older entry of district {district} "
                            f"(version {entry.version}, already saw {highest[0]}): refused as a "
                            "possible rollback; tell the registry operator"
                        )
                    if entry.version == highest[0] and bytes(envelope.body) != highest[1]:
                        raise DirectoryError(
                            f"the registry served two different entries of district {district} "
                            f"with the same version {entry.version}: refused; tell the registry "
                            "operator"
                        )
                self._highest[district] = (entry.version, bytes(envelope.body))
                self._cache[district] = _Cached(entry=entry, fetched_at=now)
                self._verified_at[district] = now
        return _usable(entry)

    def search_schools(self, query: str, limit: int = 20) -> list[SchoolMatch]:
        """Registered schools matching ``query`` (name or CDS code). Not cached, not signed.

        Raises ``PeerUnavailable`` when the registry cannot be reached,
        ``RegistryError`` when this client was built without a search function.
        """
        if self._search_fn is None:
            raise RegistryError("this directory client cannot search schools")
        return self._search_fn(query, limit)

    def cache_age_seconds(self) -> float | None:
        """Seconds since the oldest cached entry was verified with the registry (None: none).

        It grows past the TTL only while the registry cannot be reached.
        """
        now = self._clock()
        with self._lock:
            times = [self._verified_at[code] for code in self._cache if code in self._verified_at]
        return max((now - t).total_seconds() for t in times) if times else None

    def forget(self, code: str) -> None:
        """Drop a cached entry (not the rollback floor), e.g. after the peer presented a new key."""
        with self._lock:
            self._cache.pop(DistrictCode(code), None)

    def _fresh(self, cached: _Cached, now: datetime) -> bool:
        return now - cached.fetched_at < self._ttl and now < cached.entry.expires_at


def _usable(entry: DirectoryEntry) -> DirectoryEntry:
    if not entry.is_active:
        raise DirectoryError(f"district {entry.district_code} has been revoked by the registry")
    return entry


_T = TypeVar("_T")

# How the registry's refusals read at a district (rt_client.status_codes).
_REGISTRY: Final = Remote(
    refusal=RegistryError,
    refused="the registry refused the request ({code})",
    unreachable="the registry cannot be reached ({code})",
    not_authorized=(
        "the registry refused this district's certificate (was the district revoked, "
        "or its key rotated without updating this server?)"
    ),
)


def _call_registry(call: Callable[[], _T], code: str | None) -> _T:
    """Run one registry call, turning gRPC errors into the project's errors.

    ``PeerUnavailable`` when it may work later, ``DirectoryError`` for an
    unregistered district, ``RegistryError`` for any other refusal.
    """
    try:
        return call()
    except grpc.RpcError as exc:
        remote = _REGISTRY
        if code is not None:
            district = code.replace("{", "{{").replace("}", "}}")  # a template, not a text
            remote = replace(remote, not_found=f"district {district} is not registered")
        raise error_from_rpc(exc, remote) from exc


class RegistryLogFetcher:
    """The registry's directory-log RPCs for ``rt_client.tlog.LogVerifier``."""

    def __init__(
        self,
        channel: grpc.Channel | Callable[[], grpc.Channel],
        timeout: float = _DEFAULT_TIMEOUT,
    ) -> None:
        # As DirectoryClient.for_registry: a function gives the channel of the
        # moment, so a server that renewed its certificate asks with the new one.
        self._channel = channel if callable(channel) else (lambda: channel)
        self._timeout = timeout

    def checkpoint(self, min_cosignatures: int) -> bytes:
        request = registry_pb2.GetCheckpointRequest(min_cosignatures=min_cosignatures)
        answer = self._call(lambda stub: stub.GetCheckpoint(request, timeout=self._timeout))
        return bytes(answer.note)

    def inclusion(self, code: str, version: int, tree_size: int) -> tuple[int, list[bytes]]:
        request = registry_pb2.GetInclusionProofRequest(
            district_code=code, version=version, tree_size=tree_size
        )
        answer = self._call(lambda stub: stub.GetInclusionProof(request, timeout=self._timeout))
        return answer.leaf_index, [bytes(h) for h in answer.hashes]

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        request = registry_pb2.GetConsistencyProofRequest(old_size=old_size, new_size=new_size)
        answer = self._call(lambda stub: stub.GetConsistencyProof(request, timeout=self._timeout))
        return [bytes(h) for h in answer.hashes]

    def _call(self, rpc: Callable[[registry_pb2_grpc.RegistryStub], _T]) -> _T:
        """One log RPC; once more on the new channel if ours was renewed meanwhile."""
        used = self._channel()
        try:
            return _call_log(lambda: rpc(registry_pb2_grpc.RegistryStub(used)))
        except PeerUnavailable:
            again = self._channel()
            if again is used:
                raise
            return _call_log(lambda: rpc(registry_pb2_grpc.RegistryStub(again)))


def _call_log(call: Callable[[], _T]) -> _T:
    """A log RPC: ``PeerUnavailable`` if it may work later, ``DirectoryError`` otherwise.

    The registry refusing our own certificate is our trouble, not the peer's
    whose entry we are checking (a renewal under way, a rotation not yet taken
    up): that peer's call is answered "try later", never refused for good.
    """
    try:
        return call()
    except grpc.RpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            raise PeerUnavailable(
                "the registry refused this district's certificate when asked for its log"
                " (a renewal under way, or the key rotated without updating this server?)"
            ) from exc
        error = error_from_rpc(exc, _REGISTRY)
        if isinstance(error, RegistryError) and not isinstance(error, PeerUnavailable):
            raise DirectoryError(f"the registry's log answered: {error}") from exc
        raise error from exc


def _school_match(msg: registry_pb2.SchoolMatch) -> SchoolMatch:
    return SchoolMatch(
        cds_code=SchoolCode(msg.cds_code),
        name=msg.name,
        district_code=DistrictCode(msg.district_code),
        district_name=msg.district_name,
    )


def registry_channel(
    address: str, tls: TlsIdentity, server_name: str | None = None
) -> grpc.Channel:
    """A mutual-TLS channel from a district to the registry at ``address``.

    ``server_name`` defaults to the name every registry server certificate
    carries (``rt_client.tls.REGISTRY_SERVER_NAME``), whatever address is dialled.
    """
    return secure_channel(
        address, tls.channel_credentials(), server_name or REGISTRY_SERVER_NAME, _RECONNECT_OPTIONS
    )
