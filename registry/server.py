"""Run the registry: two gRPC listeners, each with health checking and reflection.

- ``enroll_listen``: server-authenticated TLS, serving only ``Enroll`` (a
  district has no certificate yet; it proves itself with its authorization code).
- ``listen``: mutual TLS (``require_client_auth=True``), serving everything else.

They are two gRPC servers rather than two ports of one, because gRPC Python
routes by method name only: one server would answer ``Enroll`` on the mTLS
port and the other methods on the enrollment port.
"""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.rt.v1 import registry_pb2, registry_pb2_grpc
from registry.service import EnrollOnlyServicer, RegistryService, RegistryServicer
from rt_client.config import RegistryConfig
from rt_client.errors import ConfigError
from rt_client.tls import SERVER_KEEPALIVE_OPTIONS, TlsIdentity, server_only_credentials

__all__ = ["RunningRegistry", "start_registry_server"]

_SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name


@dataclass
class RunningRegistry:
    """A started registry: its bound ports, and how to stop it."""

    port: int  # mutual TLS
    enroll_port: int  # server-only TLS, Enroll only
    _servers: list[grpc.Server] = field(repr=False)
    _health: list[health.HealthServicer] = field(repr=False)

    def stop(self, grace: float | None = 1.0) -> None:
        """Report NOT_SERVING to health checkers, then stop both listeners."""
        for servicer in self._health:
            servicer.enter_graceful_shutdown()
        events = [server.stop(grace) for server in self._servers]
        for event in events:
            event.wait()

    def wait_for_termination(self, timeout: float | None = None) -> None:
        for server in self._servers:
            server.wait_for_termination(timeout)


def start_registry_server(
    config: RegistryConfig,
    service: RegistryService,
    server_tls: TlsIdentity,
    *,
    listen: str | None = None,
    enroll_listen: str | None = None,
) -> RunningRegistry:
    """Build, bind and start both listeners. ``listen``/``enroll_listen`` override the config.

    Raises ``ConfigError`` when an address cannot be bound.
    """
    mtls = _new_server(config.max_concurrent_rpcs)
    registry_pb2_grpc.add_RegistryServicer_to_server(RegistryServicer(service), mtls)
    mtls_health = _add_health_and_reflection(mtls)
    enroll = _new_server(config.enroll_max_concurrent_rpcs)
    registry_pb2_grpc.add_RegistryServicer_to_server(EnrollOnlyServicer(service), enroll)
    enroll_health = _add_health_and_reflection(enroll)

    mtls_address = listen or config.listen
    enroll_address = enroll_listen or config.enroll_listen
    port = _bind(mtls, mtls_address, server_tls.server_credentials())
    enroll_port = _bind(
        enroll, enroll_address, server_only_credentials(server_tls.key_pem, server_tls.cert_pem)
    )
    mtls.start()
    enroll.start()
    return RunningRegistry(
        port=port,
        enroll_port=enroll_port,
        _servers=[mtls, enroll],
        _health=[mtls_health, enroll_health],
    )


def _new_server(max_concurrent_rpcs: int) -> grpc.Server:
    # Beyond ``maximum_concurrent_rpcs`` gRPC answers RESOURCE_EXHAUSTED at once
    # (DESIGN.md section 8) instead of queueing without bound.
    return grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=min(max_concurrent_rpcs, 32), thread_name_prefix="registry"
        ),
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=list(SERVER_KEEPALIVE_OPTIONS),
    )


def _add_health_and_reflection(server: grpc.Server) -> health.HealthServicer:
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set(health.OVERALL_HEALTH, health_pb2.HealthCheckResponse.SERVING)
    servicer.set(_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return servicer


def _bind(server: grpc.Server, address: str, credentials: grpc.ServerCredentials) -> int:
    try:
        port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise ConfigError(f"cannot listen on {address}")
    return int(port)
