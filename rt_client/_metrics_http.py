"""The opt-in HTTP listener Prometheus scrapes: ``[metrics] listen`` of a district or registry.

It lives in ``rt_client`` only because both servers depend on it (as
``_serving``); nothing in the protocol library uses it. The listener serves one
server's own ``CollectorRegistry`` (never the process-wide default), so several
servers in one process (tests) keep their figures apart. It is plain HTTP
without authentication: loopback only, unless the config says otherwise.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from rt_client.errors import ConfigError
from rt_client.tls import split_host_port

__all__ = ["MetricsListener"]


class MetricsListener:
    """``/metrics`` of ``registry`` over HTTP on ``listen`` (host:port; port 0: any free)."""

    def __init__(self, listen: str, registry: CollectorRegistry) -> None:
        host, port = split_host_port(listen)
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {listen} (metrics.listen): {exc.strerror or exc}; "
                "is another server using that port?"
            ) from exc
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        self.port: int = server.server_port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
