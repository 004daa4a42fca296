"""Outgoing calls to other districts' peer services.

One channel per district (re-used across calls: a TLS handshake per call would
dominate small transfers), built from the district's verified directory entry.
A district that lists several endpoints (replicas) is balanced with gRPC's own
``round_robin`` policy. gRPC errors are turned into domain errors here, so the
flow code reacts by kind: retry later (``PeerUnavailable``), already delivered
(``Duplicate``), or refused for good (``TransferError``).
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Callable
from typing import TypeVar

import grpc

from protos.rt.v1 import peer_pb2_grpc
from rt_client.directory import Directory
from rt_client.errors import Duplicate, PeerUnavailable, TransferError
from rt_client.tls import TlsIdentity

T = TypeVar("T")

# Codes after which the same call may succeed later.
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}

# Keepalive agreed with the server side (rt_server.server): the client pings no
# more often than the server permits, so a long idle link is not cut as abusive.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 2),
]


def channel_target(endpoints: list[str]) -> tuple[str, str, list[tuple[str, object]]]:
    """(target, TLS server name, extra options) for a district's endpoints."""
    if not endpoints:
        raise TransferError("the other district has published no endpoint")
    host = endpoints[0].rsplit(":", 1)[0].strip("[]")
    if len(endpoints) == 1:
        return endpoints[0], host, []
    config = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
    hosts = [e.rsplit(":", 1)[0].strip("[]") for e in endpoints]
    if all(_is_ipv4(h) for h in hosts):
        target = "ipv4:" + ",".join(endpoints)
    else:
        # A DNS name that resolves to every replica; round_robin spreads over them.
        target = f"dns:///{endpoints[0]}"
    return target, host, [("grpc.service_config", config)]


def _is_ipv4(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return False


class PeerClients:
    """A cache of channels to other districts, keyed by district and endpoints."""

    def __init__(self, tls: TlsIdentity, directory: Directory) -> None:
        self._tls = tls
        self._directory = directory
        self._lock = threading.Lock()
        self._channels: dict[str, tuple[tuple[str, ...], grpc.Channel]] = {}

    def stub(self, district: str) -> peer_pb2_grpc.DistrictPeerStub:
        entry = self._directory.lookup(district)
        endpoints = tuple(entry.endpoints)
        with self._lock:
            cached = self._channels.get(district)
            if cached is None or cached[0] != endpoints:
                if cached is not None:
                    cached[1].close()
                target, host, extra = channel_target(list(endpoints))
                options: list[tuple[str, object]] = [*KEEPALIVE_OPTIONS, *extra]
                if host != target.rsplit(":", 1)[0]:
                    options.append(("grpc.ssl_target_name_override", host))
                channel = grpc.secure_channel(
                    target, self._tls.channel_credentials(), options=options
                )
                cached = (endpoints, channel)
                self._channels[district] = cached
        return peer_pb2_grpc.DistrictPeerStub(cached[1])

    def close(self) -> None:
        with self._lock:
            for _, channel in self._channels.values():
                channel.close()
            self._channels.clear()


def call_peer(call: Callable[[], T]) -> T:
    """Run one peer call, turning gRPC errors into the project's errors."""
    try:
        return call()
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        if code == grpc.StatusCode.ALREADY_EXISTS:
            raise Duplicate("the other district already has this") from exc
        if code in _RETRYABLE:
            raise PeerUnavailable(
                f"the other district could not be reached ({code.name}); it will be retried"
            ) from exc
        raise TransferError(f"the other district refused the call ({code.name})") from exc
