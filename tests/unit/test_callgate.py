"""The call gate on a real gRPC server on loopback: admission, shares, bounded waits, parsing.

The caller's identity comes from call metadata here (the district and registry
gates take it from the TLS peer; ``tests/security/test_call_slots.py`` runs
those over real mutual TLS). A stalled call is what an attacker sends: headers,
then no message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from protos.rt.v1 import common_pb2
from rt_client.callgate import NOT_AUTHORIZED, Admission, CallGate, refuse
from tests.harness import wait_for

Code = grpc.StatusCode
ECHO = "/test.Gate/Echo"
COLLECT = "/test.Gate/Collect"
COUNTDOWN = "/test.Gate/Countdown"


def _admit(context: grpc.ServicerContext, method: str) -> Admission:
    caller = dict(context.invocation_metadata()).get("caller", "")
    if caller == "mallory":
        refuse(context, Code.PERMISSION_DENIED, NOT_AUTHORIZED)
    return Admission(caller=caller)


class Gated:
    """A server of three methods behind a ``CallGate``; ``served`` counts what reached them."""

    def __init__(self, *, per_caller: int = 2, wait: float = 0.5, idle: float = 0.5) -> None:
        self.served: list[str] = []
        self.gate = CallGate(
            _admit, per_caller=per_caller, message_wait_seconds=wait, idle_seconds=idle
        )
        env = common_pb2.SignedEnvelope
        handlers = grpc.method_handlers_generic_handler(
            "test.Gate",
            {
                "Echo": grpc.unary_unary_rpc_method_handler(
                    self._echo, env.FromString, env.SerializeToString
                ),
                "Collect": grpc.stream_unary_rpc_method_handler(
                    self._collect, env.FromString, env.SerializeToString
                ),
                "Countdown": grpc.unary_stream_rpc_method_handler(
                    self._countdown, env.FromString, env.SerializeToString
                ),
            },
        )
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=20),
            interceptors=[self.gate],
            handlers=[handlers],
            maximum_concurrent_rpcs=16,
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.release = threading.Event()

    def _echo(
        self, request: common_pb2.SignedEnvelope, context: object
    ) -> common_pb2.SignedEnvelope:
        self.served.append(request.signer_district)
        return request

    def _collect(self, requests: Iterator[common_pb2.SignedEnvelope], context: object) -> object:
        names = [r.signer_district for r in requests]
        self.served.extend(names)
        return common_pb2.SignedEnvelope(signer_district=",".join(names))

    def _countdown(
        self, request: common_pb2.SignedEnvelope, context: object
    ) -> Iterator[common_pb2.SignedEnvelope]:
        for _ in range(3):
            self.release.wait(5)
            yield request

    def echo(self, caller: str, name: str = "x", timeout: float = 5) -> common_pb2.SignedEnvelope:
        call = self.channel.unary_unary(
            ECHO,
            request_serializer=common_pb2.SignedEnvelope.SerializeToString,
            response_deserializer=common_pb2.SignedEnvelope.FromString,
        )
        return call(
            common_pb2.SignedEnvelope(signer_district=name),
            timeout=timeout,
            metadata=[("caller", caller)],
        )

    def stalled(self, caller: str, method: str = ECHO) -> grpc.Future:
        """A call that sends its headers and then nothing (until ``release``)."""
        call = self.channel.stream_unary(method, request_serializer=None)

        def nothing() -> Iterator[bytes]:
            self.release.wait(30)
            return
            yield  # pragma: no cover

        return call.future(nothing(), timeout=30, metadata=[("caller", caller)])

    def raw(self, caller: str, payload: bytes) -> bytes:
        return self.channel.unary_unary(ECHO)(payload, timeout=5, metadata=[("caller", caller)])

    def close(self) -> None:
        self.release.set()
        self.channel.close()
        self.server.stop(None)
        self.gate.stop()


@pytest.fixture
def gated() -> Iterator[Gated]:
    g = Gated()
    yield g
    g.close()


def _code(future: grpc.Future, timeout: float = 10) -> grpc.StatusCode:
    error = future.exception(timeout=timeout)
    return Code.OK if error is None else error.code()


def test_a_caller_over_its_share_is_refused_at_once_and_others_still_get_in(gated: Gated) -> None:
    held = [gated.stalled("eve") for _ in range(2)]
    wait_for("eve's two calls to be held", lambda: gated.gate.calls_held_by("eve") == 2)
    started = time.monotonic()
    third = gated.stalled("eve")
    assert _code(third, timeout=2) == Code.RESOURCE_EXHAUSTED
    assert time.monotonic() - started < 1.0
    assert gated.echo("bob", "hello").signer_district == "hello"
    assert gated.gate.calls_held_by("eve") == 2
    gated.release.set()
    for call in held:
        call.exception(timeout=5)


def test_a_call_whose_message_never_comes_is_cut_and_its_slot_freed(gated: Gated) -> None:
    started = time.monotonic()
    stalled = gated.stalled("eve")
    assert _code(stalled) == Code.CANCELLED
    assert 0.5 <= time.monotonic() - started < 5
    wait_for("the slot to be given back", lambda: gated.gate.calls_held_by("eve") == 0)
    assert gated.served == []


def test_a_refused_caller_holds_no_slot_and_reaches_nothing(gated: Gated) -> None:
    stalled = [gated.stalled("mallory") for _ in range(5)]
    for call in stalled:
        error = call.exception(timeout=2)  # refused at call start, before any message
        assert error is not None and error.code() == Code.PERMISSION_DENIED
        assert error.details() == NOT_AUTHORIZED
    assert gated.gate.calls_held_by("mallory") == 0
    assert gated.served == []


def test_a_message_that_does_not_parse_is_invalid_argument_but_only_after_admission(
    gated: Gated,
) -> None:
    with pytest.raises(grpc.RpcError) as admitted:
        gated.raw("bob", b"\xff\xff\xff")
    assert admitted.value.code() == Code.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as refused:
        gated.raw("mallory", b"\xff\xff\xff")
    assert refused.value.code() == Code.PERMISSION_DENIED
    assert gated.served == []
    assert gated.gate.calls_held_by("bob") == 0


def test_a_request_stream_is_cut_when_it_stalls_and_parsed_message_by_message(
    gated: Gated,
) -> None:
    collect = gated.channel.stream_unary(
        COLLECT,
        request_serializer=common_pb2.SignedEnvelope.SerializeToString,
        response_deserializer=common_pb2.SignedEnvelope.FromString,
    )
    names = (common_pb2.SignedEnvelope(signer_district=n) for n in ("a", "b"))
    reply = collect(names, timeout=5, metadata=[("caller", "bob")])
    assert reply.signer_district == "a,b"

    def one_then_nothing() -> Iterator[common_pb2.SignedEnvelope]:
        yield common_pb2.SignedEnvelope(signer_district="c")
        gated.release.wait(30)

    started = time.monotonic()
    future = collect.future(one_then_nothing(), timeout=30, metadata=[("caller", "bob")])
    assert _code(future) == Code.CANCELLED
    assert time.monotonic() - started < 5
    raw_collect = gated.channel.stream_unary(COLLECT)
    with pytest.raises(grpc.RpcError) as malformed:
        raw_collect(iter([b"\xff\xff"]), timeout=5, metadata=[("caller", "bob")])
    assert malformed.value.code() != Code.OK


def test_a_response_stream_keeps_its_slot_until_it_ends(gated: Gated) -> None:
    countdown = gated.channel.unary_stream(
        COUNTDOWN,
        request_serializer=common_pb2.SignedEnvelope.SerializeToString,
        response_deserializer=common_pb2.SignedEnvelope.FromString,
    )
    responses = countdown(
        common_pb2.SignedEnvelope(signer_district="n"), timeout=10, metadata=[("caller", "bob")]
    )
    wait_for("the stream to hold a slot", lambda: gated.gate.calls_held_by("bob") == 1)
    gated.release.set()
    assert len(list(responses)) == 3
    wait_for("the slot to be given back", lambda: gated.gate.calls_held_by("bob") == 0)
