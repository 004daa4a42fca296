"""Admission to a gRPC server: no call slot without an identity, and no slot forever.

gRPC Python gives an accepted call a worker thread and one of the server's
``maximum_concurrent_rpcs`` slots as soon as its headers arrive; for a method
with a single request it then waits in that thread for the message, without
bound. A caller that sends headers and never the message holds both for as
long as it likes (an outside attacker held 64 of a district's slots for
minutes, and every other district got RESOURCE_EXHAUSTED). ``CallGate`` serves
every method so that:

1. **The caller is admitted at call start.** Each handler is registered as a
   request-*streaming* handler taking raw bytes (the wire is the same for a
   unary and a streaming request), so the gate runs when the headers arrive,
   before any message is read. ``admit`` names the caller, or refuses it.
2. **Each caller has its own share.** An admitted caller (a district, or a
   source address where nobody has an identity yet) holds at most
   ``per_caller`` calls at once; one more is refused with RESOURCE_EXHAUSTED at
   once, so one caller's load cannot refuse another's.
3. **Every wait for the caller is bounded.** A single request must arrive
   within ``message_wait_seconds``; each message of a request stream within
   ``idle_seconds`` of the one before. Otherwise the call is cancelled, and its
   thread and slot are free again.
4. **Parsing comes after admission.** A message that does not parse is
   INVALID_ARGUMENT, never a traceback.

The server's worker pool must be at least ``maximum_concurrent_rpcs``: a call
gRPC accepted but no thread picks up would hang instead of being refused.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError

from rt_client.errors import InvalidInput, PeerUnavailable
from rt_client.interceptors import HandlerInterceptor

__all__ = [
    "BUSY",
    "NOT_AUTHORIZED",
    "Admission",
    "CallGate",
    "StreamCut",
    "StreamWatchdog",
    "caller_address",
    "client_address",
    "refuse",
]

log = logging.getLogger("rt_client.callgate")

# The one text of every authorization refusal, wherever it is decided: a
# caller must not learn which check refused it.
NOT_AUTHORIZED: Final = "not authorized"
BUSY: Final = "busy, try again later"
_MALFORMED: Final = "refused"

_R = TypeVar("_R")
T = TypeVar("T")


class StreamCut(PeerUnavailable):
    """The caller stopped sending: the call was cut, or the caller's side left."""


@dataclass(frozen=True)
class Admission:
    """An admitted caller: the key of its share, and the context its handler runs in."""

    caller: str
    # Where the handler runs (e.g. with the authorized peer set); None: as it is.
    run_in: contextvars.Context | None = None


Admit = Callable[[grpc.ServicerContext, str], Admission]


def refuse(context: grpc.ServicerContext, status: grpc.StatusCode, text: str) -> NoReturn:
    """Abort the call (``context.abort`` raises; this says so to the type checker)."""
    context.abort(status, text)
    raise AssertionError("unreachable: context.abort raises")


def client_address(peer: str) -> str:
    """The address in a gRPC peer string (``context.peer()``), without the port.

    ``"ipv4:192.0.2.7:5555"`` -> ``"192.0.2.7"``, ``"ipv6:[2001:db8::7]:5555"``
    (brackets possibly percent-encoded) -> ``"2001:db8::7"``; anything else
    (``"unix:/path"``) as given.
    """
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host, _, _port = urllib.parse.unquote(rest).rpartition(":")
    return host.removeprefix("[").removesuffix("]") if kind == "ipv6" else host


def caller_address(context: grpc.ServicerContext) -> str:
    """The share key of a caller with no identity: its address, an IPv6 one by its /64."""
    address = client_address(context.peer() or "")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return address


class _Shares:
    """How many calls each caller holds, and a cap on each."""

    def __init__(self, per_caller: int) -> None:
        self._cap = per_caller
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def take(self, caller: str) -> bool:
        with self._lock:
            held = self._held.get(caller, 0)
            if held >= self._cap:
                return False
            self._held[caller] = held + 1
            return True

    def give_back(self, caller: str) -> None:
        with self._lock:
            held = self._held.get(caller, 0) - 1
            if held > 0:
                self._held[caller] = held
            else:
                self._held.pop(caller, None)

    def held(self, caller: str) -> int:
        with self._lock:
            return self._held.get(caller, 0)


class CallGate(HandlerInterceptor):
    """Admits, shares out and bounds every call of a server (see the module docstring).

    ``admit(context, method)`` returns the caller's ``Admission`` or aborts the
    call (``refuse``). It runs before any message of the call is read.
    """

    def __init__(
        self,
        admit: Admit,
        *,
        per_caller: int,
        message_wait_seconds: float,
        idle_seconds: float,
    ) -> None:
        if per_caller < 1:
            raise ValueError("per_caller must be at least 1")
        self._admit = admit
        self._shares = _Shares(per_caller)
        self._message_wait = message_wait_seconds
        self.watchdog = StreamWatchdog(idle_seconds)

    def calls_held_by(self, caller: str) -> int:
        """How many calls ``caller`` holds now (for tests and diagnostics)."""
        return self._shares.held(caller)

    def stop(self) -> None:
        self.watchdog.stop()

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        parse = handler.request_deserializer or _unparsed
        serializer = handler.response_serializer
        if handler.request_streaming:
            behavior = handler.stream_stream or handler.stream_unary
        else:
            behavior = handler.unary_stream or handler.unary_unary
        streaming_response = handler.response_streaming

        def gated(raw_requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            admission = self._admit(context, method)
            if not self._shares.take(admission.caller):
                log.warning("%s from %s: over its share of calls", method, admission.caller)
                refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, BUSY)
            given_back = False
            try:
                what = f"{method.rsplit('/', 1)[-1]} call from {admission.caller}"
                if handler.request_streaming:
                    messages = self.watchdog.watch(context, raw_requests, what)
                    request: Any = _parsed(messages, parse)
                else:
                    request = self._single_message(context, raw_requests, parse, what)
                run_in = admission.run_in or contextvars.copy_context()
                result = run_in.run(behavior, request, context)
                if streaming_response:
                    given_back = True
                    return self._responses_within(run_in, result, admission.caller)
                return result
            finally:
                if not given_back:
                    self._shares.give_back(admission.caller)

        if streaming_response:
            return grpc.stream_stream_rpc_method_handler(gated, response_serializer=serializer)
        return grpc.stream_unary_rpc_method_handler(gated, response_serializer=serializer)

    def _single_message(
        self,
        context: grpc.ServicerContext,
        raw_requests: Iterator[bytes],
        parse: Callable[[bytes], Any],
        what: str,
    ) -> Any:
        messages = self.watchdog.watch(context, raw_requests, what, limit=self._message_wait)
        try:
            raw = next(messages)
        except StopIteration:
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, _MALFORMED)
        except StreamCut:
            refuse(context, grpc.StatusCode.CANCELLED, "no request arrived in time")
        finally:
            messages.close()
        try:
            return parse(raw)
        except (DecodeError, ValueError, TypeError):
            log.info("%s: a request that does not parse", what)
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, _MALFORMED)

    def _responses_within(
        self, run_in: contextvars.Context, responses: Iterator[_R], caller: str
    ) -> Iterator[_R]:
        """Drive a response iterator in ``run_in``; the caller's share is held until it ends."""
        try:
            while True:
                try:
                    item = run_in.run(next, responses)
                except StopIteration:
                    return
                yield item
        finally:
            self._shares.give_back(caller)


def _unparsed(raw: bytes) -> bytes:
    return raw


def _parsed(messages: Iterator[bytes], parse: Callable[[bytes], T]) -> Iterator[T]:
    for raw in messages:
        try:
            message = parse(raw)
        except (DecodeError, ValueError, TypeError) as exc:
            raise _Malformed("a streamed message that does not parse") from exc
        yield message


class _Malformed(InvalidInput):
    """A message of a request stream did not parse: the caller broke the protocol."""


# -- idle streams ------------------------------------------------------------


@dataclass(eq=False)
class _Watched:
    context: grpc.ServicerContext
    what: str
    limit: float
    waiting_since: float | None = None
    cut: bool = field(default=False)


class StreamWatchdog:
    """One thread per server that cancels calls waiting on their caller for too long.

    Only the time spent *waiting for the caller* counts: the handler's own work
    between messages (storing a frame, verifying a whole transfer) never does.
    """

    def __init__(self, idle_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._idle = idle_seconds
        self._shortest = idle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: dict[int, _Watched] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(
        self,
        context: grpc.ServicerContext,
        messages: Iterator[T],
        what: str,
        *,
        limit: float | None = None,
    ) -> Generator[T, None, None]:
        """``messages`` as they arrive; cut (``StreamCut``) after ``limit`` seconds of waiting.

        ``limit`` defaults to the watchdog's ``idle_seconds``; ``what`` names the
        call in the log. Raises ``StreamCut`` also when the caller's side
        cancelled the call or its connection was lost.
        """
        watched = _Watched(context, what, self._idle if limit is None else limit)
        key = id(watched)
        with self._lock:
            self._streams[key] = watched
            self._shortest = min(self._shortest, watched.limit)
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

    @staticmethod
    def _cut_error(watched: _Watched) -> StreamCut:
        if watched.cut:
            return StreamCut(f"the {watched.what} stalled for {watched.limit:.0f} s and was cut")
        return StreamCut(f"the {watched.what} was cut by the caller's side (cancelled or lost)")

    def _start_thread(self) -> None:
        # Called with the lock held.
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stream-watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                interval = min(max(self._shortest / 4, 0.05), 1.0)
            if self._stopping.wait(interval):
                return
            now = self._clock()
            with self._lock:
                stalled = [
                    w
                    for w in self._streams.values()
                    if not w.cut and w.waiting_since is not None and now - w.waiting_since > w.limit
                ]
                for w in stalled:
                    w.cut = True
            for w in stalled:
                log.warning("cut a %s: nothing arrived for %.0f s", w.what, w.limit)
                w.context.cancel()
