"""Flaws 1 and 2 of the outside attacker's report: call slots held by stalled calls.

A stalled call sends its HTTP/2 headers and never its message. gRPC Python
used to give each one a worker thread and a call slot until the caller let go,
and the peer gate ran only once a message arrived: 64 of them from any
certificate holder, even a revoked district, locked every other district out
of a peer server (153 s observed), and the registry likewise on both ports.

Each test here opens 200 such calls against real servers over real TLS and
shows that the attacker is held to its own share, for a bounded time, while
another district (or the right operator) still gets through within its
deadline, and that nothing changed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos.rt.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from rt_client.directory import registry_channel
from rt_client.enroll import enroll_district
from rt_client.tls import REGISTRY_SERVER_NAME, TlsIdentity, server_only_channel
from rt_server.rpc.auth import PeerAuthInterceptor
from tests.faults._proxy import CuttingProxy
from tests.harness import free_port, wait_for
from tests.harness.flow import create_request, wait_status
from tests.harness.world import Side
from tests.security.conftest import ATTACKER, RPC_TIMEOUT, Unchanged, World, build_world

Code = grpc.StatusCode
STALLED_CALLS = 200
SUBMIT_REQUEST = "/rt.v1.DistrictPeer/SubmitRequest"
MESSAGE_WAIT = 3.0
Status = common_pb2.RequestStatus


class Stalled:
    """``count`` calls of ``method`` on ``channel`` that send headers and then nothing."""

    def __init__(self, channel: grpc.Channel, method: str, count: int) -> None:
        self._release = threading.Event()
        call = channel.stream_unary(method, request_serializer=None)
        self.calls = [call.future(self._nothing(), timeout=60) for _ in range(count)]

    def _nothing(self) -> Iterator[bytes]:
        self._release.wait(60)
        return
        yield  # pragma: no cover

    def outcomes(self, timeout: float) -> dict[grpc.StatusCode, int]:
        """How each call ended (waiting up to ``timeout`` for each)."""
        counts: dict[grpc.StatusCode, int] = {}
        for call in self.calls:
            error = call.exception(timeout=timeout)
            code = Code.OK if error is None else error.code()
            counts[code] = counts.get(code, 0) + 1
        return counts

    def release(self) -> None:
        self._release.set()


def _peer_channel(world: World, target: Side, tls: TlsIdentity) -> grpc.Channel:
    world.peer(target, tls)  # dialled exactly as the world dials every peer
    return world.channels[-1]


def _gate(side: Side) -> PeerAuthInterceptor:
    assert side.server is not None and side.server.peer_gate is not None
    return side.server.peer_gate


@pytest.fixture(scope="module")
def stall_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from tests.harness.flow import add_student, small_records

    w = build_world(
        tmp_path_factory.mktemp("stall"),
        message_wait_seconds=MESSAGE_WAIT,
        directory_ttl_seconds=1,
    )
    add_student(w.a, "A1", small_records(1))
    add_student(w.b, "B1")
    yield w
    w.close()


def test_200_stalled_calls_from_one_district_leave_another_districts_request_through(
    stall_world: World,
) -> None:
    world = stall_world
    gate = _gate(world.a)
    share = min(world.a.enrolled.config.max_rpcs_per_peer, 64)
    with Unchanged(world):
        stalled = Stalled(_peer_channel(world, world.a, world.c.identity.tls), SUBMIT_REQUEST, 200)
        wait_for("C to hold its whole share", lambda: gate.calls_held_by(ATTACKER) == share)
    try:
        started = time.monotonic()
        request_id = create_request(world.pair)  # B's registrar: PENDING at A when it returns
        assert time.monotonic() - started < RPC_TIMEOUT
        assert gate.calls_held_by(ATTACKER) <= share
    finally:
        outcomes = stalled.outcomes(timeout=MESSAGE_WAIT + 10)
        stalled.release()
    # The share was held until the message wait ran out (CANCELLED), the rest refused at once.
    assert set(outcomes) <= {Code.RESOURCE_EXHAUSTED, Code.CANCELLED}, outcomes
    assert outcomes.get(Code.CANCELLED, 0) <= share, outcomes
    wait_for("C's slots to be free", lambda: gate.calls_held_by(ATTACKER) == 0)
    wait_status(world.a, request_id, Status.PENDING)


def test_a_revoked_districts_stalled_calls_hold_no_slot(tmp_path: Path) -> None:
    from tests.harness.flow import add_student

    world = build_world(tmp_path, message_wait_seconds=30, directory_ttl_seconds=1)
    try:
        add_student(world.b, "B1")
        gate = _gate(world.a)
        world.registry.service.revoke(ATTACKER)
        time.sleep(1.5)  # A's cached entry of C expires (directory_ttl_seconds)
        with Unchanged(world):
            stalled = Stalled(
                _peer_channel(world, world.a, world.c.identity.tls), SUBMIT_REQUEST, STALLED_CALLS
            )
            started = time.monotonic()
            outcomes = stalled.outcomes(timeout=10)
            stalled.release()
        # Refused at call start, long before the 30 s message wait, without a message.
        assert time.monotonic() - started < 10
        assert set(outcomes) <= {Code.PERMISSION_DENIED, Code.RESOURCE_EXHAUSTED}, outcomes
        assert outcomes.get(Code.PERMISSION_DENIED, 0) > 0
        assert gate.calls_held_by(ATTACKER) == 0
        create_request(world.pair)
    finally:
        world.close()


def test_200_stalled_calls_on_the_registrys_mtls_port_leave_other_districts_their_lookups(
    stall_world: World,
) -> None:
    world = stall_world
    registry = world.registry
    attacker = registry_channel(registry.address, world.c.identity.tls, REGISTRY_SERVER_NAME)
    honest = registry_channel(registry.address, world.a.enrolled.identity.tls, REGISTRY_SERVER_NAME)
    try:
        stalled = Stalled(attacker, "/rt.v1.Registry/LookupDistrict", STALLED_CALLS)
        time.sleep(0.5)  # every stalled call has reached the registry
        started = time.monotonic()
        entry = registry_pb2_grpc.RegistryStub(honest).LookupDistrict(
            registry_pb2.LookupDistrictRequest(district_code=world.b.code), timeout=5
        )
        assert entry.body and time.monotonic() - started < 5
        outcomes = stalled.outcomes(timeout=30)
        stalled.release()
        assert set(outcomes) <= {Code.RESOURCE_EXHAUSTED, Code.CANCELLED}, outcomes
        assert outcomes.get(Code.RESOURCE_EXHAUSTED, 0) > 0
    finally:
        attacker.close()
        honest.close()


def test_200_stalled_enrollments_from_one_source_leave_the_operator_enrollment(
    stall_world: World, tmp_path: Path
) -> None:
    world = stall_world
    registry = world.registry
    enroll_port = int(registry.enroll_address.rsplit(":", 1)[1])
    # The attacker comes from 127.0.0.2, the district's operator from 127.0.0.1.
    relay = CuttingProxy(enroll_port, source_host="127.0.0.2")
    attacker = server_only_channel(relay.address, registry.ca_pem, REGISTRY_SERVER_NAME)
    try:
        stalled = Stalled(attacker, "/rt.v1.Registry/Enroll", STALLED_CALLS)
        time.sleep(0.5)
        auth_code = registry.add_district("3333333", "Operator Unified")
        started = time.monotonic()
        config = enroll_district(
            code="3333333",
            authorization_code=auth_code,
            registry_address=registry.address,
            registry_enroll_address=registry.enroll_address,
            registry_ca_pem=registry.ca_pem,
            registry_signing_key=registry.signing_key_hex,
            endpoints=[f"127.0.0.1:{free_port()}"],
            data_dir=tmp_path / "operator",
            clock=registry.clock,
            timeout=RPC_TIMEOUT,
        )
        assert config.district_code == "3333333"
        assert time.monotonic() - started < RPC_TIMEOUT
        outcomes = stalled.outcomes(timeout=30)
        stalled.release()
        assert set(outcomes) <= {Code.RESOURCE_EXHAUSTED, Code.CANCELLED}, outcomes
    finally:
        attacker.close()
        relay.close()


def test_a_message_that_does_not_parse_is_invalid_argument_after_authorization(
    stall_world: World,
) -> None:
    world = stall_world
    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # a length prefix far beyond the message
    with Unchanged(world):
        authorized = _peer_channel(world, world.a, world.c.identity.tls)
        with pytest.raises(grpc.RpcError) as info:
            authorized.unary_unary(SUBMIT_REQUEST)(garbage, timeout=RPC_TIMEOUT)
    assert info.value.code() == Code.INVALID_ARGUMENT
    assert info.value.details() == "refused"
