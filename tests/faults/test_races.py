"""Two deliveries of one transfer at once: the loser is told to try again, and nothing doubles.

It happens after a cut: the receiver may still be storing the last frame of
the old stream when the sender, retrying, asks for the offset and opens a new
one; or two replicas of the sender both think they hold the delivery. The
receiver's per-frame offset check lets exactly one stream write each byte;
the other is answered ABORTED ("try again"), which the sender's delivery worker
retries, asking for the offset afresh. It must not be a refusal for good (a
request FAILED for nothing).
"""

from __future__ import annotations

import io
import queue
import uuid
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import func, select

from protos.rt.v1 import peer_pb2, peer_pb2_grpc, records_pb2
from rt_client.directory import utc_now, verify_entry
from rt_client.errors import PeerUnavailable
from rt_client.identity import DistrictIdentity, load_identity
from rt_client.peers import call_peer
from rt_client.tls import district_server_name
from rt_client.transfer import SealedTransfer, seal_transfer
from rt_server.core.tables import TABLES, row_to_proto
from rt_server.store.schema import TRANSFER_CHUNKS, TRANSFERS
from tests.faults.conftest import Cluster, add_new_student, create_request, large_records
from tests.harness import wait_for
from tests.harness.processes import DistrictProcess, Status
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR, PRIOR_SCHOOL

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

FRAME = 4 * 16400


class Feed:
    """A request stream the test writes to frame by frame (None ends it)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[peer_pb2.DeliveryFrame | None] = queue.Queue()

    def send(self, frame: peer_pb2.DeliveryFrame | None) -> None:
        self._queue.put(frame)

    def __iter__(self) -> Iterator[peer_pb2.DeliveryFrame]:
        while (frame := self._queue.get()) is not None:
            yield frame


def sealed_by_a(
    cluster: Cluster, a: DistrictProcess, request_id: str
) -> tuple[DistrictIdentity, str, SealedTransfer, bytes]:
    """A's identity, and a transfer of 3,000 HIS rows for ``request_id`` sealed by A for B."""
    identity = load_identity(a.config.data_dir)
    b_entry = verify_entry(
        cluster.registry.service.lookup(NEW),
        bytes.fromhex(cluster.registry.signing_key_hex),
        utc_now(),
    )
    spec = TABLES["HIS"]
    rows = large_records(3_000)["HIS"]
    batches = []
    for first in range(0, len(rows), 1000):
        batch = records_pb2.RecordBatch(table=spec.enum)
        getattr(batch, spec.batch_field).extend(
            row_to_proto(spec, {**r, "PID": "A1", "SQ": first + i + 1, "SRC": "SIS"})
            for i, r in enumerate(rows[first : first + 1000])
        )
        batches.append(batch)
    out = io.BytesIO()
    transfer_id = str(uuid.uuid4())
    sealed = seal_transfer(
        batches=lambda: batches,
        transfer_id=transfer_id,
        request_id=request_id,
        sender=PRIOR,
        receiver=b_entry,
        signing_key=identity.signing_key,
        out=out,
        created_at=utc_now(),
    )
    return identity, transfer_id, sealed, out.getvalue()


def test_racing_streams_of_one_transfer_store_each_byte_once_and_the_loser_retries(
    cluster: Cluster,
) -> None:
    a = cluster.district(PRIOR, PRIOR_SCHOOL)  # not running: the test sends as A
    # Every delivery stored frame by frame (none held in memory until it verifies).
    b = cluster.district(NEW, NEW_SCHOOL, buffered_delivery_bytes=0).start()
    add_new_student(b, "B1", "1234567890")
    request_id = create_request(b, "B1", PRIOR_SCHOOL)  # stays QUEUED: A is not up
    identity, transfer_id, sealed, ciphertext = sealed_by_a(cluster, a, request_id)
    pieces = [ciphertext[i : i + FRAME] for i in range(0, len(ciphertext), FRAME)]
    assert len(pieces) >= 4

    def start(offset: int) -> peer_pb2.DeliveryFrame:
        return peer_pb2.DeliveryFrame(
            start=peer_pb2.DeliveryStart(
                header=sealed.header, wrapped_key=sealed.wrapped_key, offset=offset
            )
        )

    def data(i: int) -> peer_pb2.DeliveryFrame:
        return peer_pb2.DeliveryFrame(ciphertext=pieces[i])

    trailer = peer_pb2.DeliveryFrame(
        trailer=peer_pb2.TransferTrailer(signature=sealed.trailer_signature)
    )

    def held() -> int:
        return int(
            b.scalar(
                select(TRANSFERS.c.received_offset).where(TRANSFERS.c.transfer_id == transfer_id)
            )
            or 0
        )

    channel = grpc.secure_channel(
        b.config.advertised_endpoints[0],
        identity.tls.channel_credentials(),
        [("grpc.ssl_target_name_override", district_server_name(b.code))],
    )
    stub = peer_pb2_grpc.DistrictPeerStub(channel)
    slow = Feed()
    try:
        # The old stream: its first frame is stored, then it lingers.
        old = stub.DeliverRecords.future(iter(slow), timeout=60)
        slow.send(start(0))
        slow.send(data(0))
        wait_for("the first frame to be stored", lambda: held() == len(pieces[0]) or None)

        # A new stream that asked for the offset a moment too early: try again.
        with pytest.raises(grpc.RpcError) as stale:
            stub.DeliverRecords(iter([start(0), data(0)]), timeout=10)
        assert stale.value.code() == grpc.StatusCode.ABORTED
        with pytest.raises(PeerUnavailable):  # what the sender's worker makes of it: retry
            call_peer(lambda: stub.DeliverRecords(iter([start(0)]), timeout=10))
        assert held() == len(pieces[0])

        # The retry, from the offset held, delivers the rest.
        rest = [data(i) for i in range(1, len(pieces))]
        receipt = stub.DeliverRecords(iter([start(len(pieces[0])), *rest, trailer]), timeout=30)
        assert receipt.signer_district == NEW
        b.wait_status(request_id, Status.Value("DATA_RECEIVED"))

        # The old stream wakes up and sends its next frame: told to try again,
        # and the received transfer is untouched.
        slow.send(data(1))
        slow.send(None)
        error = old.exception(timeout=30)
        assert error is not None and error.code() == grpc.StatusCode.ABORTED
        # Asking again, the old sender learns the transfer is complete.
        position = stub.GetDeliveryOffset(
            peer_pb2.DeliveryOffsetRequest(transfer_id=transfer_id), timeout=10
        )
        assert position.complete and position.offset == len(ciphertext)
    finally:
        slow.send(None)
        channel.close()

    transfer = b.rows(select(TRANSFERS).where(TRANSFERS.c.transfer_id == transfer_id))[0]
    assert transfer.state == "RECEIVED"
    stored = b.rows(
        select(TRANSFER_CHUNKS.c.offset, func.length(TRANSFER_CHUNKS.c.data))
        .where(TRANSFER_CHUNKS.c.transfer_id == transfer_id)
        .order_by(TRANSFER_CHUNKS.c.seq)
    )
    assert [(o, n) for o, n in stored] == [
        (i * FRAME, len(piece)) for i, piece in enumerate(pieces)
    ]


def test_racing_streams_of_a_small_transfer_store_it_once(cluster: Cluster) -> None:
    """Deliveries held in memory until they verify: each racer stores all or nothing."""
    a = cluster.district(PRIOR, PRIOR_SCHOOL)  # not running: the test sends as A
    b = cluster.district(NEW, NEW_SCHOOL).start()  # 1 MiB buffered: this transfer is smaller
    add_new_student(b, "B1", "1234567890")
    request_id = create_request(b, "B1", PRIOR_SCHOOL)
    identity, transfer_id, sealed, ciphertext = sealed_by_a(cluster, a, request_id)
    assert len(ciphertext) < b.config.buffered_delivery_bytes
    frames = [
        peer_pb2.DeliveryFrame(
            start=peer_pb2.DeliveryStart(header=sealed.header, wrapped_key=sealed.wrapped_key)
        ),
        *(
            peer_pb2.DeliveryFrame(ciphertext=ciphertext[i : i + FRAME])
            for i in range(0, len(ciphertext), FRAME)
        ),
        peer_pb2.DeliveryFrame(
            trailer=peer_pb2.TransferTrailer(signature=sealed.trailer_signature)
        ),
    ]

    def stored() -> list[tuple[int, int]]:
        return [
            (int(o), int(n))
            for o, n in b.rows(
                select(TRANSFER_CHUNKS.c.offset, func.length(TRANSFER_CHUNKS.c.data))
                .where(TRANSFER_CHUNKS.c.transfer_id == transfer_id)
                .order_by(TRANSFER_CHUNKS.c.seq)
            )
        ]

    channel = grpc.secure_channel(
        b.config.advertised_endpoints[0],
        identity.tls.channel_credentials(),
        [("grpc.ssl_target_name_override", district_server_name(b.code))],
    )
    stub = peer_pb2_grpc.DistrictPeerStub(channel)
    slow, cut = Feed(), Feed()
    try:
        # One stream stops after half its frames, another is cut there: nothing
        # of either is stored, and B reports nothing held.
        lingering = stub.DeliverRecords.future(iter(slow), timeout=60)
        dropped = stub.DeliverRecords.future(iter(cut), timeout=60)
        half = len(frames) // 2
        for frame in frames[:half]:
            slow.send(frame)
            cut.send(frame)
        cut.send(None)
        assert dropped.exception(timeout=30) is not None
        position = stub.GetDeliveryOffset(
            peer_pb2.DeliveryOffsetRequest(transfer_id=transfer_id), timeout=10
        )
        assert (position.offset, position.complete) == (0, False)
        assert stored() == []

        # A third stream delivers it all; the lingering one then finishes too
        # and is answered with the same receipt, storing nothing twice.
        first = stub.DeliverRecords(iter(frames), timeout=30)
        for frame in frames[half:]:
            slow.send(frame)
        slow.send(None)
        second = lingering.result(timeout=30)
        assert first == second and first.signer_district == NEW
    finally:
        slow.send(None)
        cut.send(None)
        channel.close()
    b.wait_status(request_id, Status.Value("DATA_RECEIVED"))
    assert b.rows(select(TRANSFERS.c.state).where(TRANSFERS.c.transfer_id == transfer_id)) == [
        ("RECEIVED",)
    ]
    assert stored() == [
        (i, len(ciphertext[i : i + FRAME])) for i in range(0, len(ciphertext), FRAME)
    ]
