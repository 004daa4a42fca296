"""SIGTERM mid-delivery: in-flight streams finish within the grace, or are checkpointed.

- the sender is stopped with a short grace: its stream is cut, its outbox item
  released at once (no lease to wait out, no attempt counted), and after the
  restart it resumes from what the receiver stored;
- the receiver is stopped with a long enough grace: the delivery under way
  finishes, is committed and acknowledged before the process exits.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from protos.rt.v1 import registrar_pb2
from rt_server.store.schema import OUTBOX, TRANSFERS
from tests.faults.conftest import (
    Cluster,
    add_new_student,
    approve,
    counts,
    create_request,
    large_records,
    seed_student,
)
from tests.harness import wait_for
from tests.harness.processes import DistrictProcess, Status
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR, PRIOR_SCHOOL

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

SSID = "1234567890"


def received_counts(b: DistrictProcess, request_id: str) -> dict[str, int]:
    """Rows per table of the transfer B verified (every chunk decrypted, every row valid)."""
    return counts(b.call("GetRequest", registrar_pb2.RequestRef(request_id=request_id)).received)


def held_counts(a: DistrictProcess, pid: str) -> dict[str, int]:
    return {code: len(rows) for code, rows in a.record_rows(pid).items() if rows}


def held_part(b: DistrictProcess, transfer_id: str) -> int | None:
    rows = b.rows(select(TRANSFERS).where(TRANSFERS.c.transfer_id == transfer_id))
    if rows and 0 < rows[0].received_offset < rows[0].ciphertext_bytes:
        return int(rows[0].received_offset)
    return None


def test_sigterm_at_the_sender_checkpoints_the_stream_and_resumes_after_restart(
    cluster: Cluster,
) -> None:
    # A long lease: had the stopped server not released its item, the restarted
    # one could not take it for a minute.
    a = cluster.district(
        PRIOR, PRIOR_SCHOOL, shutdown_grace_seconds=0.5, delivery_lease_seconds=60.0
    )
    b = cluster.district(NEW, NEW_SCHOOL)
    seed_student(a, "A1", ssid=SSID, records=large_records(40_000))
    a.start(env={"RT_TEST_FRAME_DELAY_MS": "400"})
    b.start()
    add_new_student(b, "B1", SSID)
    request_id = create_request(b, "B1", PRIOR_SCHOOL)
    a.wait_status(request_id, Status.Value("PENDING"))
    transfer_id = approve(a, request_id, "A1")
    held = wait_for("B to hold part of the delivery", lambda: held_part(b, transfer_id))

    began = time.monotonic()
    assert a.terminate() == 0
    assert time.monotonic() - began < 10
    assert "shutdown: cut 1 outgoing stream(s)" in a.log()
    item = a.rows(
        select(OUTBOX).where(OUTBOX.c.request_id == request_id, OUTBOX.c.kind == "delivery")
    )[0]
    assert (item.status, item.claimed_by, item.attempts) == ("QUEUED", None, 0)
    assert "shutdown" in item.last_error
    assert held_part(b, transfer_id)  # B kept what arrived

    a.start()
    b.wait_status(request_id, Status.Value("DATA_RECEIVED"), timeout=20)
    a.wait_status(request_id, Status.Value("SENT"))
    assert f"resuming transfer {transfer_id} to {NEW} at byte" in a.log()
    resumed_at = int(
        a.log().split(f"resuming transfer {transfer_id} to {NEW} at byte ")[1].split()[0]
    )
    assert resumed_at >= held
    assert received_counts(b, request_id) == held_counts(a, "A1")


def test_sigterm_at_the_receiver_lets_the_delivery_under_way_finish(cluster: Cluster) -> None:
    a = cluster.district(PRIOR, PRIOR_SCHOOL)
    b = cluster.district(NEW, NEW_SCHOOL, shutdown_grace_seconds=20.0)
    seed_student(a, "A1", ssid=SSID, records=large_records(40_000))
    a.start(env={"RT_TEST_FRAME_DELAY_MS": "300"})
    b.start()
    add_new_student(b, "B1", SSID)
    request_id = create_request(b, "B1", PRIOR_SCHOOL)
    a.wait_status(request_id, Status.Value("PENDING"))
    transfer_id = approve(a, request_id, "A1")
    wait_for("B to hold part of the delivery", lambda: held_part(b, transfer_id))

    assert b.terminate() == 0
    # Stopped only once the stream had finished: received, committed, acknowledged.
    row = b.rows(select(TRANSFERS).where(TRANSFERS.c.transfer_id == transfer_id))[0]
    assert row.state == "RECEIVED"
    a.wait_status(request_id, Status.Value("SENT"))
    assert "resuming transfer" not in a.log()

    b.start()
    assert b.status(request_id) == Status.Value("DATA_RECEIVED")
    assert received_counts(b, request_id) == held_counts(a, "A1")
