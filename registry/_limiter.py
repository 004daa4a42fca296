"""Failed enrollments counted by where they come from, so that no one can lock a district out.

A district's code is public; if failures locked the *district*, anyone could
keep it from ever enrolling by sending wrong codes. So failures lock only the
*source* that made them (its IPv4 address, or its IPv6 /64: one customer's
allocation), never the district:

- per (source, district): ``district_threshold`` failures lock that source out
  of that district;
- per source: ``source_threshold`` failures, whatever the districts (a scanner),
  lock it out of every district.

A lock lasts ``lock_seconds``, doubling with each further lockout of the same
source up to ``max_lock_seconds``; attempts refused during it are not counted
and do not extend it, and nothing another source does changes it. Once it
ends the source starts counting afresh. A source that failed nothing for
twice ``max_lock_seconds`` (so, after its last lock, at least
``max_lock_seconds`` of quiet) is forgotten, back-off included.

The state is in memory, per registry process, on a monotonic clock, and
bounded: at most ``max_sources`` sources (the least recently seen is dropped
first), each holding at most about ``source_threshold`` districts' counts
(counts below a lock are dropped when the source is locked out of every
district). Two attempts of one source under way at once may both be counted,
so a source may get a few more tries than the threshold (at most the
enrollment listener's ``enroll_max_concurrent_rpcs``).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["EVERY_DISTRICT", "EnrollmentLimiter", "Lockout", "MonotonicClock", "source_of"]

MonotonicClock = Callable[[], float]

EVERY_DISTRICT: Final = "*"
# Longer than any address, IPv6 /64 or gRPC peer string we key on.
_MAX_SOURCE_LENGTH: Final = 100


def source_of(address: str) -> str:
    """The key failures of ``address`` are counted under.

    An IPv4 address as is; IPv6 by its /64 (one host usually holds all of it,
    so one attacker could otherwise count as 2**64 sources), an IPv4-mapped one
    as IPv4; anything else (a Unix socket) as given, truncated.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:_MAX_SOURCE_LENGTH]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


@dataclass(frozen=True)
class Lockout:
    """A source locked out of one district (or of ``EVERY_DISTRICT``) until ``until``."""

    source: str
    district: str
    seconds: float  # how long this lock lasts, from when it began
    until: float  # on the limiter's monotonic clock
    lockouts: int  # the source's lockouts so far, this one included

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.until - now)


@dataclass
class _Pair:
    failures: int = 0
    lock: Lockout | None = None


@dataclass
class _Source:
    failures: int = 0  # since its last lockout of every district
    lockouts: int = 0
    last_failure: float = 0.0
    lock: Lockout | None = None  # of every district
    districts: dict[str, _Pair] = field(default_factory=dict)


class EnrollmentLimiter:
    """Counts failed enrollments per source and per (source, district); see the module docstring.

    Thread-safe.
    """

    def __init__(
        self,
        *,
        district_threshold: int,
        source_threshold: int,
        lock_seconds: float,
        max_lock_seconds: float,
        max_sources: int,
        clock: MonotonicClock = time.monotonic,
    ) -> None:
        self._district_threshold = district_threshold
        self._source_threshold = source_threshold
        self._lock_seconds = lock_seconds
        self._max_lock_seconds = max(max_lock_seconds, lock_seconds)
        self._max_sources = max_sources
        self._clock = clock
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._clock()

    def lockout_of(self, address: str, district: str) -> Lockout | None:
        """The lock that refuses ``address`` for ``district`` now, if any. Counts nothing."""
        now = self._clock()
        with self._lock:
            state = self._get(source_of(address), now, create=False)
            if state is None:
                return None
            if _active(state.lock, now):
                return state.lock
            pair = state.districts.get(district)
            if pair is not None and _active(pair.lock, now):
                return pair.lock
            return None

    def record_failure(self, address: str, district: str) -> Lockout | None:
        """Count one failed attempt of ``address`` at ``district``.

        Returns the lockout this failure started, if it started one. (An
        attempt already refused by a lock is not to be recorded.)
        """
        now = self._clock()
        source = source_of(address)
        with self._lock:
            state = self._get(source, now, create=True)
            assert state is not None  # create=True
            state.last_failure = now
            state.failures += 1
            # Counts whose lock has run out start afresh; drop what is left of them.
            state.districts = {
                code: pair
                for code, pair in state.districts.items()
                if pair.failures or _active(pair.lock, now)
            }
            pair = state.districts.setdefault(district, _Pair())
            pair.failures += 1
            if state.failures >= self._source_threshold:
                state.lock = self._new_lock(state, source, EVERY_DISTRICT, now)
                state.failures = 0
                state.districts = {
                    code: pair for code, pair in state.districts.items() if _active(pair.lock, now)
                }
                return state.lock
            if pair.failures >= self._district_threshold:
                pair.lock = self._new_lock(state, source, district, now)
                pair.failures = 0
                return pair.lock
            return None

    def record_success(self, address: str, district: str) -> None:
        """``address`` enrolled ``district``: its count there is over."""
        with self._lock:
            state = self._sources.get(source_of(address))
            if state is not None:
                state.districts.pop(district, None)

    def failures(self, address: str, district: str | None = None) -> int:
        """Failures counted and not yet turned into a lockout: at ``district``, or in all."""
        now = self._clock()
        with self._lock:
            state = self._get(source_of(address), now, create=False)
            if state is None:
                return 0
            if district is None:
                return state.failures
            pair = state.districts.get(district)
            return pair.failures if pair is not None else 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._sources)

    def _get(self, source: str, now: float, *, create: bool) -> _Source | None:
        state = self._sources.get(source)
        # Quiet for the longest lock after its last lock ended: forgotten, back-off included.
        if state is not None and now - state.last_failure >= 2 * self._max_lock_seconds:
            del self._sources[source]
            state = None
        if state is None:
            if not create:
                return None
            state = self._sources[source] = _Source(last_failure=now)
            while len(self._sources) > self._max_sources:
                self._sources.popitem(last=False)
        self._sources.move_to_end(source)
        return state

    def _new_lock(self, state: _Source, source: str, district: str, now: float) -> Lockout:
        seconds = min(self._lock_seconds * 2 ** min(state.lockouts, 32), self._max_lock_seconds)
        state.lockouts += 1
        return Lockout(
            source=source,
            district=district,
            seconds=seconds,
            until=now + seconds,
            lockouts=state.lockouts,
        )


def _active(lock: Lockout | None, now: float) -> bool:
    return lock is not None and lock.until > now
