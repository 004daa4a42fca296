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
import socket
import threading
from collections.abc import Callable
from typing import Final, TypeVar

import grpc

from protos.rt.v1 import peer_pb2_grpc
from rt_client.directory import Directory
from rt_client.errors import PeerUnavailable, TransferError
from rt_client.status_codes import Remote, error_from_rpc
from rt_client.tlog import GossipClientInterceptor, LogVerifier
from rt_client.tls import TlsIdentity, district_server_name

T = TypeVar("T")

# How a district's refusals read here: the flow reacts by kind (see the module docstring).
# No "will be retried" in ``unreachable``: past the horizon this text is the FAILED reason.
PEER: Final = Remote(
    refusal=TransferError,
    refused="the other district refused the call ({code})",
    unreachable="the other district could not be reached ({code})",
    already="the other district already has this",
    retry_soon=(
        "the other district could not verify this district yet (its registry cannot be "
        "reached) ({code})"
    ),
)

# Keepalive agreed with the server side (rt_server.server): the client pings no
# more often than the server permits, so a long idle link is not cut as abusive.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 2),
]

# After a lost connection gRPC reconnects on its own schedule (1 s doubling to
# 120 s by default) and fails calls at once in between, whatever the delivery
# worker's own backoff. Capped here so that a district that comes back is
# reached within seconds of the worker's next attempt, not minutes.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 1_000),
    ("grpc.max_reconnect_backoff_ms", 10_000),
]


Resolver = Callable[[str, int], list[str]]


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6). Raises ``PeerUnavailable``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise PeerUnavailable(f"cannot resolve {host}; it will be retried") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def channel_target(
    endpoints: list[str], resolve: Resolver = resolve_host
) -> tuple[str, list[tuple[str, object]]]:
    """(target, extra options) for a district's endpoints.

    Every channel is balanced by gRPC's ``round_robin`` policy over every
    address of every endpoint (replica). One endpoint is dialled as it is (a
    host name resolves to all its addresses); several become an ``ipv4:`` or
    ``ipv6:`` address list, their host names resolved here, since a gRPC
    target names one host only. The TLS name checked is not derived from
    the endpoints (see ``PeerClients``). Raises ``TransferError`` (no
    endpoint) or ``PeerUnavailable`` (a name does not resolve).
    """
    if not endpoints:
        raise TransferError("the other district has published no endpoint")
    parsed = [_host_port(e) for e in endpoints]
    balanced: list[tuple[str, object]] = [
        ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))
    ]
    if len(set(parsed)) == 1:
        # One endpoint: a name with several addresses is balanced over all of them.
        return endpoints[0], balanced
    # Every address of every endpoint, by family, and which endpoints each family reaches.
    found: dict[int, list[str]] = {4: [], 6: []}
    reached: dict[int, set[int]] = {4: set(), 6: set()}
    for index, (name, port) in enumerate(parsed):
        version = _ip_version(name)
        for address in [name] if version is not None else resolve(name, port):
            family = _ip_version(address) or 4
            text = f"[{address}]:{port}" if family == 6 else f"{address}:{port}"
            if text not in found[family]:
                found[family].append(text)
            reached[family].add(index)
    # A channel holds one address family (gRPC's ipv4:/ipv6: schemes): IPv4 if
    # it reaches as many endpoints as IPv6 does, else IPv6.
    family = 4 if len(reached[4]) >= len(reached[6]) else 6
    if not found[family]:
        raise PeerUnavailable("the other district's endpoints resolve to no address")
    return f"ipv{family}:" + ",".join(found[family]), balanced


def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def _ip_version(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


class PeerClients:
    """A cache of channels to other districts, keyed by district and endpoints.

    Every channel checks the server's certificate against the district's own
    TLS name (``district_server_name``), whatever address it dials: the
    registry CA gives that name to that district alone, while an endpoint's
    host may be shared by several districts, so a server holding another
    district's certificate on the address in this district's entry fails the
    handshake before any message is sent.
    """

    def __init__(
        self, tls: TlsIdentity, directory: Directory, gossip: LogVerifier | None = None
    ) -> None:
        """With ``gossip``, every call carries our directory-log checkpoint and checks the
        peer's (``rt_client.tlog``)."""
        self._tls = tls
        self._directory = directory
        self._gossip = gossip
        self._lock = threading.Lock()
        self._channels: dict[str, tuple[tuple[str, ...], grpc.Channel]] = {}
        # Channels made with a replaced certificate: calls under way on them run
        # to the end (closing would cancel them); closed with the rest.
        self._retired: list[grpc.Channel] = []

    def set_tls(self, tls: TlsIdentity) -> None:
        """Present ``tls`` from now on: every new call gets a channel made with it."""
        with self._lock:
            self._tls = tls
            self._retired.extend(channel for _, channel in self._channels.values())
            self._channels.clear()

    def stub(self, district: str) -> peer_pb2_grpc.DistrictPeerStub:
        entry = self._directory.lookup(district)
        endpoints = tuple(entry.endpoints)
        with self._lock:
            cached = self._channels.get(district)
            if cached is None or cached[0] != endpoints:
                if cached is not None:
                    cached[1].close()
                target, extra = channel_target(list(endpoints))
                options: list[tuple[str, object]] = [
                    *KEEPALIVE_OPTIONS,
                    *RECONNECT_OPTIONS,
                    *extra,
                    ("grpc.ssl_target_name_override", district_server_name(entry.district_code)),
                ]
                channel = grpc.secure_channel(
                    target, self._tls.channel_credentials(), options=options
                )
                if self._gossip is not None:
                    channel = grpc.intercept_channel(
                        channel, GossipClientInterceptor(self._gossip, entry.district_code)
                    )
                cached = (endpoints, channel)
                self._channels[district] = cached
        return peer_pb2_grpc.DistrictPeerStub(cached[1])

    def close(self) -> None:
        with self._lock:
            for _, channel in self._channels.values():
                channel.close()
            self._channels.clear()
            for channel in self._retired:
                channel.close()
            self._retired.clear()


def call_peer(call: Callable[[], T]) -> T:
    """Run one peer call, turning gRPC errors into the project's errors.

    Raises ``Duplicate`` (already delivered), ``PeerUnavailable`` (may work
    later) or ``TransferError`` (refused), by ``rt_client.status_codes``.
    """
    try:
        return call()
    except grpc.RpcError as exc:
        raise error_from_rpc(exc, PEER) from exc
