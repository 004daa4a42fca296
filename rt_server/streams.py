"""Bounds on streams: cut incoming ones that stall, and outgoing ones at shutdown.

(DESIGN.md section 8: every call is bounded.)

An open ``DeliverRecords`` stream holds a server thread and one of the peer
server's ``maximum_concurrent_rpcs`` slots. A sender that stops sending -- its
process hung, a half-dead connection keepalive has not noticed yet, a hostile
peer that never sets a deadline -- would hold both for as long as it liked.
``StreamWatchdog`` cancels a watched stream once its handler has waited
``idle_seconds`` for the next message; the handler's read then fails, and the
thread and the slot are free again. Only the time spent *waiting for the
sender* counts: the handler's own work between messages (storing a frame,
verifying a whole transfer) never does. Whatever the stream delivered before
is durable (the receiver stores each frame as it comes), so the sender resumes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import grpc

from rt_client.errors import PeerUnavailable

__all__ = ["OutgoingStreams", "StreamCut", "StreamWatchdog"]

log = logging.getLogger("rt_server.streams")

T = TypeVar("T")


class StreamCut(PeerUnavailable):
    """The stream ended before its last message: it stalled and was cut, or the sender left."""


@dataclass
class _Watched:
    context: grpc.ServicerContext
    what: str
    waiting_since: float | None = None
    cut: bool = False


class StreamWatchdog:
    """One thread per server that cancels watched streams idle longer than ``idle_seconds``."""

    def __init__(self, idle_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._idle = idle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: dict[int, _Watched] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, context: grpc.ServicerContext, messages: Iterator[T], what: str) -> Iterator[T]:
        """``messages`` as they arrive; cut (``StreamCut``) if the sender goes quiet.

        ``what`` names the stream in the log. Raises ``StreamCut`` also when the
        sender's side cancelled the call or its connection was lost.
        """
        watched = _Watched(context, what)
        key = id(watched)
        with self._lock:
            self._streams[key] = watched
            self._start_thread()
        try:
            while True:
                watched.waiting_since = self._clock()
                try:
                    message = next(messages)
                except StopIteration:
                    if watched.cut or not context.is_active():
                        raise self._cut_error(watched) from None
                    return
                except grpc.RpcError as exc:  # the call was cancelled under the handler
                    raise self._cut_error(watched) from exc
                finally:
                    watched.waiting_since = None
                yield message
        finally:
            with self._lock:
                self._streams.pop(key, None)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _cut_error(self, watched: _Watched) -> StreamCut:
        if watched.cut:
            return StreamCut(f"the {watched.what} stalled for {self._idle:.0f} s and was cut")
        return StreamCut(f"the {watched.what} was cut by the sender's side (cancelled or lost)")

    def _start_thread(self) -> None:
        # Called with the lock held.
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stream-watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        interval = min(max(self._idle / 4, 0.05), 1.0)
        while not self._stopping.wait(interval):
            now = self._clock()
            with self._lock:
                stalled = [
                    w
                    for w in self._streams.values()
                    if not w.cut
                    and w.waiting_since is not None
                    and now - w.waiting_since > self._idle
                ]
                for w in stalled:
                    w.cut = True
            for w in stalled:
                log.warning(
                    "cut a %s: nothing arrived for %.0f s (what arrived before is kept)",
                    w.what,
                    self._idle,
                )
                w.context.cancel()


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
