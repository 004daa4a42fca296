"""``registry._cache.BoundedCache``: entries age out, and a clear voids reads begun before it."""

from __future__ import annotations

from registry._cache import BoundedCache


class Ticks:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_its_seconds_counted_from_the_read() -> None:
    ticks = Ticks()
    cache: BoundedCache[str, int] = BoundedCache(1.0, ticks)
    token = cache.begin()
    ticks.now += 0.5  # the database read took half a second
    cache.put("a", 1, token)
    assert cache.get("a") == 1
    ticks.now += 0.5
    assert cache.get("a") is None


def test_a_read_begun_before_a_clear_is_not_kept() -> None:
    cache: BoundedCache[str, int] = BoundedCache(1.0, Ticks())
    token = cache.begin()
    cache.clear()  # a write committed while the read was under way
    cache.put("a", 1, token)
    assert cache.get("a") is None
    cache.put("a", 2, cache.begin())
    assert cache.get("a") == 2


def test_zero_seconds_keeps_nothing_and_the_size_is_bounded() -> None:
    off: BoundedCache[str, int] = BoundedCache(0, Ticks())
    off.put("a", 1, off.begin())
    assert off.get("a") is None
    small: BoundedCache[int, int] = BoundedCache(1.0, Ticks(), max_items=3)
    for i in range(10):
        small.put(i, i, small.begin())
    assert sum(small.get(i) is not None for i in range(10)) <= 3
