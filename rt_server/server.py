"""Assemble and run a district server from its config.

Two gRPC servers, so that no service is reachable where it should not be:
the peer server (``DistrictPeer`` on mutual TLS, every method behind the peer
gate) and the registrar server (``Registrar`` on a Unix socket, mode 0600, in
the district's 0700 data directory). Both serve health checking and
reflection. The delivery worker drains the outbox in background messages.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import uuid
from concurrent import futures
from datetime import timedelta
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.rt.v1 import peer_pb2, peer_pb2_grpc, registrar_pb2, registrar_pb2_grpc
from rt_client._serving import configure_logging, wait_for_stop_signal
from rt_client.config import DistrictConfig
from rt_client.directory import DirectoryClient, registry_channel
from rt_client.errors import ConfigError
from rt_client.identity import load_identity
from rt_client.ids import RequestId
from rt_client.peers import PeerClients
from rt_client.tls import configure_grpc_tls
from rt_server.flows import messages, requester, responder, sender
from rt_server.flows.district import District, Limits
from rt_server.flows.outbox import DeliveryWorker, Outbox, OutboxItem, RetryPolicy
from rt_server.rpc.auth import PeerAuthInterceptor
from rt_server.rpc.errors import ErrorMappingInterceptor
from rt_server.rpc.registrar_service import RegistrarService
from rt_server.rpc.request_refs import RequestRefResolver
from rt_server.serve_lock import ServeLock
from rt_server.store import migrations
from rt_server.store.checkpoint import WalCheckpointer
from rt_server.store.engine import make_engine

log = logging.getLogger("rt_server")

# The server side of the keepalive agreement in rt_client.peers: accept pings
# as often as clients send them, and drop connections that stop answering.
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.max_connection_idle_ms", 10 * 60_000),
    # No connection lives forever: after 30 minutes it is asked to go away (the
    # client reconnects at once), and calls still under way get 10 more minutes.
    ("grpc.max_connection_age_ms", 30 * 60_000),
    ("grpc.max_connection_age_grace_ms", 10 * 60_000),
]

# gRPC refuses a Unix socket path longer than this (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107


class DistrictServer:
    """A running district: peer server, registrar server, delivery worker."""

    def __init__(
        self,
        config: DistrictConfig,
        *,
        retry: RetryPolicy | None = None,
        limits: Limits | None = None,
        worker_threads: int = 4,
    ) -> None:
        self.config = config
        # The lease is an operator's setting (several replicas), the rest a caller's.
        self._retry = dataclasses.replace(
            retry or retry_policy(config), lease=timedelta(seconds=config.delivery_lease_seconds)
        )
        self._limits = limits or Limits(
            rpc_timeout_seconds=config.rpc_timeout_seconds,
            buffered_delivery_bytes=config.buffered_delivery_bytes,
        )
        self._worker_threads = worker_threads
        self.peer_port = 0
        self._peer_server: grpc.Server | None = None
        self._registrar_server: grpc.Server | None = None
        self._worker: DeliveryWorker | None = None
        self._checkpointer: WalCheckpointer | None = None
        self._registry_channel: grpc.Channel | None = None
        self._gate: PeerAuthInterceptor | None = None
        self._health: list[health.HealthServicer] = []
        self._lock = ServeLock(Path(config.registrar_socket))
        self.district: District | None = None

    @property
    def peer_gate(self) -> PeerAuthInterceptor | None:
        """The peer server's gate (who holds how many calls), once started."""
        return self._gate

    def start(self) -> None:
        config = self.config
        if len(os.fsencode(config.registrar_socket)) > MAX_SOCKET_PATH:
            raise ConfigError(
                f"registrar_socket {config.registrar_socket} is longer than the "
                f"{MAX_SOCKET_PATH} bytes a Unix socket path may have; set registrar_socket "
                "in the config to a shorter path"
            )
        # Before anything else: a second server on this config must not touch
        # the running one's socket (serve_lock). Released by stop(), or by the
        # OS when the process dies.
        self._lock.acquire()
        try:
            self._start()
        except BaseException:
            self._lock.release()
            raise

    def _start(self) -> None:
        config = self.config
        identity = load_identity(config.data_dir)
        engine = make_engine(config.database_url)
        try:
            migrations.prepare_for_serving(engine)
        except BaseException:
            engine.dispose()
            raise
        self._registry_channel = registry_channel(
            config.registry_address, identity.tls, config.registry_server_name
        )
        directory = DirectoryClient.for_registry(
            self._registry_channel,
            config.registry_signing_key_bytes,
            ttl_seconds=config.directory_ttl_seconds,
        )
        peers = PeerClients(identity.tls, directory)
        d = District(
            code=config.district_code,
            engine=engine,
            identity=identity,
            directory=directory,
            peers=peers,
            retry=self._retry,
            limits=self._limits,
        )
        # Unique per server, not per process: in-process replicas (tests) share a pid.
        worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        outbox = Outbox(engine, d.clock, worker_id, self._retry)
        d.outbox = outbox

        def signed(rpc: str):  # type: ignore[no-untyped-def]
            return lambda item: responder.send_signed(d, item, outbox, rpc)

        def message(item: OutboxItem) -> None:
            responder.send_signed(d, item, outbox, "PostMessage")
            messages.mark_delivered(d, item)

        worker = DeliveryWorker(
            outbox,
            {
                "request": lambda item: requester.send_request(d, item, outbox),
                "decision": signed("SubmitDecision"),
                "delivery": lambda item: sender.deliver(d, item, outbox),
                "import_notice": signed("NotifyImport"),
                "message": message,
            },
            lambda item, reason: requester.mark_failed(d, item, reason),
            threads=self._worker_threads,
        )
        d.wake_worker = worker.wake
        d.outbox_claim = worker.claim
        d.hand_over = worker.hand_over
        d.run_outbox_now = lambda request_id: _drain(worker, request_id)
        self.district = d
        self._worker = worker
        self._checkpointer = WalCheckpointer(engine)
        self._checkpointer.start()

        self._peer_server = self._start_peer_server(d, directory)
        self._registrar_server = self._start_registrar_server(d, directory)
        worker.start()
        log.info("district %s serving peers on port %d", config.district_code, self.peer_port)

    def _start_peer_server(self, d: District, directory: DirectoryClient) -> grpc.Server:
        config = self.config
        self._gate = PeerAuthInterceptor(
            directory,
            per_peer=min(config.max_rpcs_per_peer, config.max_concurrent_rpcs),
            message_wait_seconds=config.message_wait_seconds,
            idle_seconds=config.stream_idle_timeout_seconds,
        )
        server = grpc.server(
            # A thread for every call gRPC accepts: a call waiting for a thread would hang.
            futures.ThreadPoolExecutor(
                max_workers=config.max_concurrent_rpcs + 4, thread_name_prefix="peer"
            ),
            interceptors=[ErrorMappingInterceptor(peer_facing=True), self._gate],
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            options=SERVER_OPTIONS,
        )
        peer_pb2_grpc.add_DistrictPeerServicer_to_server(_peer_service(d), server)
        self._health.append(
            _add_health_and_reflection(
                server, peer_pb2.DESCRIPTOR.services_by_name["DistrictPeer"].full_name
            )
        )
        try:
            port = server.add_secure_port(
                self.config.peer_listen, d.identity.tls.server_credentials()
            )
        except RuntimeError:  # what gRPC raises when the bind fails
            port = 0
        if port == 0:
            raise ConfigError(
                f"cannot listen on {self.config.peer_listen} (peer_listen): "
                "is another server using that port?"
            )
        self.peer_port = port
        server.start()
        return server

    def _start_registrar_server(self, d: District, directory: DirectoryClient) -> grpc.Server:
        path = Path(self.config.registrar_socket)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.unlink(missing_ok=True)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="registrar"),
            # Errors outermost: a prefix that names no request is a status like any other.
            interceptors=[ErrorMappingInterceptor(peer_facing=False), RequestRefResolver(d)],
            maximum_concurrent_rpcs=32,
        )
        registrar_pb2_grpc.add_RegistrarServicer_to_server(
            RegistrarService(d, directory.search_schools), server
        )
        self._health.append(
            _add_health_and_reflection(
                server, registrar_pb2.DESCRIPTOR.services_by_name["Registrar"].full_name
            )
        )
        # The socket is the registrar service's only access control: whoever
        # can open it acts for the district. Create it 0600 (umask), in a 0700 folder.
        old = os.umask(0o177)
        try:
            server.add_insecure_port(f"unix:{path}")
            server.start()
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        return server

    def stop(self, grace: float = 5.0) -> None:
        """Shut down gracefully: finish what can within ``grace`` seconds, checkpoint the rest.

        Health turns NOT_SERVING and no new call is taken. Calls under way get
        ``grace`` to finish; an incoming delivery cut after that keeps every
        frame it stored, and its sender resumes from there. The delivery worker
        claims nothing new; its sends under way get ``grace`` too, then their
        streams are cancelled and their items released, due at once, for this
        server after a restart (or another replica) to resume from what the
        receiver holds.
        """
        for servicer in self._health:
            servicer.enter_graceful_shutdown()
        events = []
        for server in (self._peer_server, self._registrar_server):
            if server is not None:
                events.append(server.stop(grace))
        if self._worker is not None:
            assert self.district is not None
            self._worker.stop(grace, cut=self.district.outgoing.cut_all)
        for event in events:
            event.wait(grace + 1)
        if self._gate is not None:
            self._gate.stop()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        if self.district is not None:
            self.district.peers.close()
            self.district.engine.dispose()
        if self._registry_channel is not None:
            self._registry_channel.close()
        # Last: the registrar socket is gone with its server, so a new server may start.
        self._lock.release()


def _peer_service(d: District) -> peer_pb2_grpc.DistrictPeerServicer:
    from rt_server.rpc.peer_service import DistrictPeerService

    return DistrictPeerService(d)


def retry_policy(config: DistrictConfig) -> RetryPolicy:
    """The delivery worker's retry policy, as the district's config sets it."""
    return RetryPolicy(
        base_seconds=config.retry_base_seconds,
        max_seconds=config.retry_max_seconds,
        horizon=timedelta(seconds=config.retry_horizon_seconds),
        lease=timedelta(seconds=config.delivery_lease_seconds),
    )


def _drain(worker: DeliveryWorker, request_id: RequestId) -> None:
    worker.run_claimed(request_id)
    while worker.run_once(request_id):
        pass


def _add_health_and_reflection(server: grpc.Server, service_name: str) -> health.HealthServicer:
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return servicer


def serve_forever(config: DistrictConfig) -> None:
    """``rt serve``: run until SIGTERM or SIGINT, then shut down gracefully."""
    configure_grpc_tls()
    configure_logging()
    server = DistrictServer(config)
    server.start()
    wait_for_stop_signal(
        f"district {config.district_code} ready: peers on port {server.peer_port}, "
        f"registrar on {config.registrar_socket}",
        log,
    )
    server.stop(grace=config.shutdown_grace_seconds)
    log.info("district %s stopped", config.district_code)
