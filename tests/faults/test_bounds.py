"""Bounds: keepalive agreed on both sides, overload refused, stalled streams cut.

A peer that opens a delivery and then sends nothing holds a server thread and
one of the server's ``maximum_concurrent_rpcs`` slots. While it does, further
calls are refused with RESOURCE_EXHAUSTED (not queued, not hung); once the
stream has been idle for ``stream_idle_timeout_seconds`` the server cuts it,
and the slot is free again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from protos.rt.v1 import peer_pb2, peer_pb2_grpc
from rt_client.identity import load_identity
from rt_client.peers import KEEPALIVE_OPTIONS
from rt_client.tls import district_server_name
from rt_server.server import SERVER_OPTIONS
from tests.faults.conftest import Cluster
from tests.harness import wait_for
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR, PRIOR_SCHOOL


def test_client_keepalive_stays_within_what_the_server_permits() -> None:
    client, server = dict(KEEPALIVE_OPTIONS), dict(SERVER_OPTIONS)
    # A client pinging more often than the server allows is sent GOAWAY
    # (too_many_pings) and its long deliveries die with it.
    assert (
        client["grpc.keepalive_time_ms"] >= server["grpc.http2.min_ping_interval_without_data_ms"]
    )
    # Neither side pings an idle connection (no call): the server would count those as strikes.
    assert client["grpc.keepalive_permit_without_calls"] == 0
    assert server["grpc.keepalive_permit_without_calls"] == 0
    # Both notice a dead peer well within a delivery's minimum deadline (60 s).
    for options in (client, server):
        assert (
            options["grpc.keepalive_time_ms"] + options["grpc.keepalive_timeout_ms"]
            <= 60_000 + 20_000
        )


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_stalled_stream_is_cut_and_overload_is_refused_meanwhile(cluster: Cluster) -> None:
    a = cluster.district(PRIOR, PRIOR_SCHOOL)  # enrolled, not running: the test speaks for it
    b = cluster.district(
        NEW, NEW_SCHOOL, max_concurrent_rpcs=1, stream_idle_timeout_seconds=1.5
    ).start()
    credentials = load_identity(a.config.data_dir).tls.channel_credentials()
    channel = grpc.secure_channel(
        b.config.advertised_endpoints[0],
        credentials,
        [("grpc.ssl_target_name_override", district_server_name(NEW))],
    )
    stub = peer_pb2_grpc.DistrictPeerStub(channel)
    release = threading.Event()
    try:

        def nothing() -> Iterator[peer_pb2.DeliveryFrame]:
            release.wait(60)  # opens the stream and never sends a frame
            return
            yield

        def offset_call() -> grpc.StatusCode:
            try:
                stub.GetDeliveryOffset(
                    peer_pb2.DeliveryOffsetRequest(
                        transfer_id="00000000-0000-4000-8000-000000000000"
                    ),
                    timeout=10,
                )
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        # The only slot may be busy a moment (start-up health checks): wait for it.
        wait_for("the slot to be free", lambda: offset_call() == grpc.StatusCode.OK, timeout=10)
        opened = time.monotonic()
        stalled = stub.DeliverRecords.future(nothing(), timeout=60)
        wait_for(
            "a call to be refused while the stalled stream holds the only slot",
            lambda: offset_call() == grpc.StatusCode.RESOURCE_EXHAUSTED,
            timeout=10,
        )

        error = stalled.exception(timeout=20)
        cut_after = time.monotonic() - opened
        assert error is not None and error.code() == grpc.StatusCode.CANCELLED
        assert 1.5 <= cut_after < 10, cut_after
        b.wait_log(f"cut a DeliverRecords call from {PRIOR}: nothing arrived for 2 s", timeout=5)
        # The slot is free again.
        wait_for(
            "the slot to be free again", lambda: offset_call() == grpc.StatusCode.OK, timeout=10
        )
        assert b.running
    finally:
        release.set()
        channel.close()
