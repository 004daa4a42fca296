"""Run the registry: two gRPC listeners, each with health checking and reflection.

- ``enroll_listen``: server-authenticated TLS, serving only ``Enroll`` (a
  district has no certificate yet; it proves itself with its authorization code).
- ``listen``: mutual TLS (``require_client_auth=True``), serving everything else.

They are two gRPC servers rather than two ports of one, because gRPC Python
routes by method name only: one server would answer ``Enroll`` on the mTLS
port and the other methods on the enrollment port.

Both admit every call at its start through a ``CallGate`` (``rt_client.callgate``):
on the mutual-TLS port only active districts, each with its own share of the
call slots; on the enrollment port, where nobody has an identity yet, each
source address its own share. Every wait for a caller's message is bounded, and
each worker pool is at least the call limit, so an overloaded registry refuses
a call at once and never leaves it hanging.
"""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.rt.v1 import registry_pb2, registry_pb2_grpc
from registry.metrics import RegistryMetrics
from registry.service import RegistryService
from registry.servicer import EnrollOnlyServicer, RegistryServicer
from registry.store import DatabaseFailure
from rt_client._metrics_http import MetricsListener
from rt_client.callgate import NOT_AUTHORIZED, Admission, CallGate, caller_address, refuse
from rt_client.config import RegistryConfig
from rt_client.errors import CallerNotAuthenticated, ConfigError, PeerAuthError
from rt_client.tls import (
    SERVER_KEEPALIVE_OPTIONS,
    TlsIdentity,
    district_of_certificate,
    peer_certificate,
    server_only_credentials,
)

__all__ = ["RunningRegistry", "start_registry_server"]

_SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name
_GATED_PREFIX = f"/{_SERVICE_NAME}/"
log = logging.getLogger("registry.server")


@dataclass
class RunningRegistry:
    """A started registry: its bound ports, and how to stop it."""

    port: int  # mutual TLS
    enroll_port: int  # server-only TLS, Enroll only
    _servers: list[grpc.Server] = field(repr=False)
    _health: list[health.HealthServicer] = field(repr=False)
    _gates: list[CallGate] = field(repr=False, default_factory=list)
    metrics_port: int = 0  # 0: no metrics listener
    _metrics_listener: MetricsListener | None = field(repr=False, default=None)

    def stop(self, grace: float | None = 1.0) -> None:
        """Report NOT_SERVING to health checkers, then stop both listeners."""
        for servicer in self._health:
            servicer.enter_graceful_shutdown()
        events = [server.stop(grace) for server in self._servers]
        for event in events:
            event.wait()
        for gate in self._gates:
            gate.stop()
        if self._metrics_listener is not None:
            self._metrics_listener.stop()
            self._metrics_listener = None

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
    mtls_gate = CallGate(
        _DistrictCaller(service).admit,
        per_caller=_share(config.max_concurrent_rpcs),
        message_wait_seconds=config.message_wait_seconds,
        idle_seconds=config.message_wait_seconds,
    )
    metrics = RegistryMetrics()
    mtls = _new_server(config.max_concurrent_rpcs, mtls_gate)
    registry_pb2_grpc.add_RegistryServicer_to_server(
        RegistryServicer(service, metrics=metrics), mtls
    )
    mtls_health = _add_health_and_reflection(mtls)
    enroll_gate = CallGate(
        _admit_source,
        per_caller=_share(config.enroll_max_concurrent_rpcs),
        message_wait_seconds=config.message_wait_seconds,
        idle_seconds=config.message_wait_seconds,
    )
    enroll = _new_server(config.enroll_max_concurrent_rpcs, enroll_gate)
    registry_pb2_grpc.add_RegistryServicer_to_server(
        EnrollOnlyServicer(service, metrics=metrics), enroll
    )
    enroll_health = _add_health_and_reflection(enroll)

    mtls_address = listen or config.listen
    enroll_address = enroll_listen or config.enroll_listen
    port = _bind(mtls, mtls_address, server_tls.server_credentials())
    enroll_port = _bind(
        enroll, enroll_address, server_only_credentials(server_tls.key_pem, server_tls.cert_pem)
    )
    listener = None
    if config.metrics_listen:
        listener = MetricsListener(config.metrics_listen, metrics.registry)
    mtls.start()
    enroll.start()
    return RunningRegistry(
        port=port,
        enroll_port=enroll_port,
        metrics_port=listener.port if listener else 0,
        _metrics_listener=listener,
        _servers=[mtls, enroll],
        _health=[mtls_health, enroll_health],
        _gates=[mtls_gate, enroll_gate],
    )


def _share(max_concurrent_rpcs: int) -> int:
    """The calls one caller may hold: a quarter of the server's, so three others still get in."""
    return max(1, max_concurrent_rpcs // 4)


def _new_server(max_concurrent_rpcs: int, gate: CallGate) -> grpc.Server:
    # Beyond ``maximum_concurrent_rpcs`` gRPC answers RESOURCE_EXHAUSTED at once
    # (DESIGN.md section 8) instead of queueing without bound; a thread for
    # every call it accepts, so none waits for one.
    return grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=max_concurrent_rpcs + 4, thread_name_prefix="registry"
        ),
        interceptors=[gate],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=list(SERVER_KEEPALIVE_OPTIONS),
    )


class _DistrictCaller:
    """Admission on the mutual-TLS port: ``Registry`` calls from active districts only."""

    def __init__(self, service: RegistryService) -> None:
        self._service = service

    def admit(self, context: grpc.ServicerContext, method: str) -> Admission:
        cert = peer_certificate(context.auth_context())
        if not method.startswith(_GATED_PREFIX):
            # Health and reflection: open, within the certificate's district's share.
            try:
                if cert is not None:
                    return Admission(caller=district_of_certificate(cert))
            except PeerAuthError:
                pass
            return Admission(caller=caller_address(context))
        try:
            return Admission(caller=self._service.authenticate(cert))
        except CallerNotAuthenticated as exc:
            log.warning("%s from %s: not authenticated: %s", method, context.peer(), exc)
            refuse(context, grpc.StatusCode.UNAUTHENTICATED, NOT_AUTHORIZED)
        except PeerAuthError as exc:
            log.warning("%s from %s: refused: %s", method, context.peer(), exc)
            refuse(context, grpc.StatusCode.PERMISSION_DENIED, NOT_AUTHORIZED)
        except DatabaseFailure:
            log.exception("%s: database unavailable", method)
            refuse(context, grpc.StatusCode.UNAVAILABLE, "registry busy, try again later")


def _admit_source(context: grpc.ServicerContext, method: str) -> Admission:
    """Admission on the enrollment port: nobody has an identity yet; each source its share."""
    return Admission(caller=caller_address(context))


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
