"""A loopback TCP forwarder that cuts connections on cue, for the fault tests.

``CuttingProxy(target_port)`` listens on 127.0.0.1 and forwards every
connection to ``127.0.0.1:target_port``, byte for byte (TLS passes through
untouched: the proxy never sees plaintext). ``plan_cuts([n1, n2, ...])``
arms it: the next connection is cut after ``n1`` bytes from client to server
(mid-record, mid-frame, wherever that falls), the one after that after ``n2``
bytes, and so on; once the plan is used up connections pass untouched. A cut
closes both sides at once, the client's with a TCP reset, as a dropped link or
a killed middlebox would look. ``source_host`` (e.g. ``127.0.0.2``) makes
the forwarded connections come from another loopback address.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import deque
from collections.abc import Iterable

_BUFFER = 64 * 1024


class CuttingProxy:
    def __init__(
        self, target_port: int, listen_port: int = 0, *, source_host: str | None = None
    ) -> None:
        self._target = ("127.0.0.1", target_port)
        # Where the forwarded connections come from (another loopback address
        # makes them another source, as the server sees it).
        self._source = (source_host, 0) if source_host else None
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", listen_port))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._plan: deque[int] = deque()
        self._open: set[socket.socket] = set()
        self._closed = False
        self.connections = 0
        self.cuts: list[int] = []  # bytes forwarded client -> server before each cut
        self._thread = threading.Thread(target=self._accept, name="cutting-proxy", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def plan_cuts(self, after_bytes: Iterable[int]) -> None:
        with self._lock:
            self._plan.extend(after_bytes)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._open)
        self._listener.close()
        for s in sockets:
            _close(s, reset=True)

    # --- internals -----------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(
                    self._target, timeout=5, source_address=self._source
                )
                upstream.settimeout(None)
            except OSError:
                _close(client, reset=True)  # the server is down: refuse, as it would
                continue
            with self._lock:
                if self._closed:
                    _close(client, reset=True)
                    _close(upstream)
                    return
                self.connections += 1
                cut_at = self._plan.popleft() if self._plan else None
                self._open.update((client, upstream))
            link = _Link(self, client, upstream, cut_at)
            threading.Thread(target=link.client_to_server, daemon=True).start()
            threading.Thread(target=link.server_to_client, daemon=True).start()

    def _forget(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._open.difference_update(sockets)


class _Link:
    def __init__(
        self,
        proxy: CuttingProxy,
        client: socket.socket,
        upstream: socket.socket,
        cut_at: int | None,
    ) -> None:
        self._proxy = proxy
        self._client = client
        self._upstream = upstream
        self._cut_at = cut_at
        self._sent = 0
        self._done = threading.Event()

    def client_to_server(self) -> None:
        try:
            while not self._done.is_set():
                data = self._client.recv(_BUFFER)
                if not data:
                    break
                if self._cut_at is not None and self._sent + len(data) >= self._cut_at:
                    head = data[: self._cut_at - self._sent]
                    if head:
                        self._upstream.sendall(head)
                    self._sent += len(head)
                    with self._proxy._lock:
                        self._proxy.cuts.append(self._sent)
                    self._finish(reset=True)
                    return
                self._upstream.sendall(data)
                self._sent += len(data)
        except OSError:
            pass
        self._finish()

    def server_to_client(self) -> None:
        try:
            while not self._done.is_set():
                data = self._upstream.recv(_BUFFER)
                if not data:
                    break
                self._client.sendall(data)
        except OSError:
            pass
        self._finish()

    def _finish(self, reset: bool = False) -> None:
        if self._done.is_set():
            return
        self._done.set()
        _close(self._client, reset=reset)
        _close(self._upstream, reset=reset)
        self._proxy._forget(self._client, self._upstream)


def _close(s: socket.socket, reset: bool = False) -> None:
    try:
        if reset:
            # SO_LINGER with a zero timeout: close() sends RST, not FIN.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Wakes the other pump thread blocked in recv() (close() alone would not).
        s.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
