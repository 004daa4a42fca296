"""Outgoing streams under way, to cut when the server shuts down.

(Incoming calls are bounded by the call gate, ``rt_client.callgate``: every
wait for a caller's message is cut after its limit.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

__all__ = ["OutgoingStreams"]

log = logging.getLogger("rt_server.flows.streams")


class OutgoingStreams:
    """Outgoing streams under way (deliveries we send), to cancel when the server shuts down.

    A cancelled delivery is not lost: the receiver keeps what it stored, and
    the delivery resumes from there after the restart.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: set[grpc.Future] = set()
        self._closed = False

    @contextmanager
    def track(self, call: grpc.Future) -> Iterator[None]:
        """Cancel ``call`` if the server shuts down while the block runs."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._calls.add(call)
        if closed:
            call.cancel()
        try:
            yield
        finally:
            with self._lock:
                self._calls.discard(call)

    def cut_all(self) -> int:
        """Cancel every stream under way, and any started from now on. Returns how many."""
        with self._lock:
            self._closed = True
            calls = list(self._calls)
        for call in calls:
            call.cancel()
        if calls:
            log.info("shutdown: cut %d outgoing stream(s); they resume on restart", len(calls))
        return len(calls)
