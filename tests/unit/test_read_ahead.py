"""The import's read-ahead: items in order, errors passed on, the producer always closed."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from rt_server.flows.review import _read_ahead


class _Source:
    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.closed = threading.Event()
        self.threads: set[str] = set()

    def __iter__(self) -> Iterator[int]:
        try:
            for i in range(self.n):
                self.threads.add(threading.current_thread().name)
                if i == self.fail_at:
                    raise ValueError("chunk 3 does not decrypt")
                yield i
        finally:
            self.closed.set()


def test_items_arrive_in_order_from_another_thread() -> None:
    source = _Source(50)
    assert list(_read_ahead(iter(source), depth=3)) == list(range(50))
    assert source.closed.is_set()
    assert source.threads == {"import-read-ahead"}


def test_a_producer_error_reaches_the_consumer() -> None:
    source = _Source(10, fail_at=3)
    got = []
    with pytest.raises(ValueError, match="chunk 3"):
        for item in _read_ahead(iter(source), depth=2):
            got.append(item)
    assert got == [0, 1, 2]
    assert source.closed.wait(5)


def test_a_consumer_that_stops_early_closes_the_producer() -> None:
    source = _Source(1000)
    items = _read_ahead(iter(source), depth=2)
    assert next(items) == 0
    items.close()  # what the import does when it fails, or finds the transfer imported
    assert source.closed.wait(5)
    assert not any(t.name == "import-read-ahead" for t in threading.enumerate())
