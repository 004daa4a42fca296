"""A small, thread-safe cache whose entries live a bounded time (monotonic clock).

The registry keeps two: the verified identity of a caller's certificate, and
the current signed entry of each district (``registry.service``). A write
through the same process clears both at once; a write by another process on
the same database (``rt-registry district revoke``, a replica) is seen once an
entry's ``seconds`` have passed, which bounds how long a revoked district can
still be answered. ``clear`` also voids reads that started before it, so a read
racing a write can never put the old state back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """``key -> value`` for at most ``seconds`` each, at most ``max_items`` at once."""

    def __init__(
        self, seconds: float, monotonic: Callable[[], float], max_items: int = 4096
    ) -> None:
        self._seconds = seconds
        self._monotonic = monotonic
        self._max_items = max_items
        self._items: dict[K, tuple[float, V]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def begin(self) -> tuple[int, float]:
        """Take this before reading the database, and hand it to ``put``.

        An entry's age counts from here, so the bound holds from the read.
        """
        return self._generation, self._monotonic()

    def get(self, key: K) -> V | None:
        if self._seconds <= 0:
            return None
        found = self._items.get(key)
        if found is None:
            return None
        stored_at, value = found
        if self._monotonic() - stored_at >= self._seconds:
            with self._lock:
                if self._items.get(key) is found:
                    del self._items[key]
            return None
        return value

    def put(self, key: K, value: V, token: tuple[int, float]) -> None:
        """Keep ``value``, unless ``clear`` ran since ``token`` was taken by ``begin``."""
        if self._seconds <= 0:
            return
        generation, started_at = token
        with self._lock:
            if generation != self._generation:
                return
            if len(self._items) >= self._max_items and key not in self._items:
                self._items.clear()
            self._items[key] = (started_at, value)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._items.clear()
