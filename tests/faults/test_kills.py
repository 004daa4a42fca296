"""Servers killed (SIGKILL) at the worst moments: every transfer still arrives exactly once.

- the receiver dies mid-stream: the delivery resumes from the frames it stored;
- the sender dies after the receiver committed, before the receipt was recorded:
  it sends again, the receiver answers with the same receipt and changes
  nothing, and the spool goes only once that receipt is recorded;
- the receiver dies in the middle of an import: nothing of it is kept, and the
  retried import writes every row exactly once.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from protos.rt.v1 import registrar_pb2
from rt_server.store.schema import (
    DISCLOSURES,
    IMPORT_LEDGER,
    OUTBOX,
    THREAD_MESSAGES,
    TRANSFER_CHUNKS,
    TRANSFERS,
)
from tests.faults.conftest import (
    Cluster,
    add_new_student,
    approve,
    counts,
    create_request,
    import_records,
    large_records,
    seed_student,
    small_records,
)
from tests.harness import wait_for
from tests.harness.processes import DistrictProcess, Status
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR, PRIOR_SCHOOL

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

SSID = "1234567890"


def transfer_row(district: DistrictProcess, transfer_id: str):  # type: ignore[no-untyped-def]
    rows = district.rows(select(TRANSFERS).where(TRANSFERS.c.transfer_id == transfer_id))
    return rows[0] if rows else None


def chunks(district: DistrictProcess, transfer_id: str) -> int:
    return int(
        district.scalar(
            select(func.count())
            .select_from(TRANSFER_CHUNKS)
            .where(TRANSFER_CHUNKS.c.transfer_id == transfer_id)
        )
    )


def resumed_offsets(district: DistrictProcess, transfer_id: str) -> list[int]:
    return [
        int(m.group(1))
        for m in re.finditer(
            rf"resuming transfer {transfer_id} to \d+ at byte (\d+)", district.log()
        )
    ]


def started(  # type: ignore[no-untyped-def]
    cluster: Cluster,
    records: dict,  # type: ignore[type-arg]
    a_env: dict[str, str] | None = None,
    b_env: dict[str, str] | None = None,
):
    """A (student A1 with ``records``) and B (student B1) running, B's request PENDING at A."""
    a = cluster.district(PRIOR, PRIOR_SCHOOL)
    b = cluster.district(NEW, NEW_SCHOOL)
    seed_student(a, "A1", ssid=SSID, records=records)
    a.start(env=a_env)
    b.start(env=b_env)
    add_new_student(b, "B1", SSID)
    request_id = create_request(b, "B1", PRIOR_SCHOOL)
    a.wait_status(request_id, Status.Value("PENDING"))
    return a, b, request_id


def test_receiver_killed_mid_stream_resumes_and_imports_every_row_once(
    cluster_on_each_database: Cluster,
) -> None:
    a, b, request_id = started(
        cluster_on_each_database, large_records(40_000), a_env={"RT_TEST_FRAME_DELAY_MS": "300"}
    )
    transfer_id = approve(a, request_id, "A1")

    def part_held() -> int | None:
        row = transfer_row(b, transfer_id)
        if row is not None and 0 < row.received_offset < row.ciphertext_bytes:
            return int(row.received_offset)
        return None

    held = wait_for("B to have stored part of the delivery", part_held)
    b.kill()
    after_kill = transfer_row(b, transfer_id)
    assert after_kill.state == "RECEIVING"
    assert 0 < after_kill.received_offset < after_kill.ciphertext_bytes

    b.start()
    b.wait_status(request_id, Status.Value("DATA_RECEIVED"))
    a.wait_status(request_id, Status.Value("SENT"))

    # Resumed from what B had durably stored, never from the start.
    offsets = resumed_offsets(a, transfer_id)
    assert offsets and min(offsets) >= held, a.log_tail()
    final = transfer_row(b, transfer_id)
    assert final.state == "RECEIVED"
    assert final.received_offset == final.ciphertext_bytes
    # The sealed ciphertext A sent is the one B holds (sealed once, never again).
    assert final.ciphertext_sha512 == transfer_row(a, transfer_id).ciphertext_sha512

    result = import_records(b, request_id)
    assert not result.already_imported
    assert b.record_rows("B1") == a.record_rows("A1")
    assert sum(counts(result.imported).values()) == sum(
        len(v) for v in a.record_rows("A1").values()
    )
    a.wait_status(request_id, Status.Value("COMPLETE"))
    # The spool went once B's receipt verified.
    assert chunks(a, transfer_id) == 0


def test_sender_killed_before_the_receipt_resends_and_receiver_deduplicates(
    cluster_on_each_database: Cluster,
) -> None:
    a, b, request_id = started(
        cluster_on_each_database,
        small_records(3),
        a_env={"RT_TEST_PAUSE_AT": "delivery.after_reply"},
    )
    transfer_id = approve(a, request_id, "A1")
    a.wait_log("test hook: paused at delivery.after_reply")

    # B committed the transfer and signed its receipt; A has recorded nothing.
    b.wait_status(request_id, Status.Value("DATA_RECEIVED"))
    b_before = transfer_row(b, transfer_id)
    b_chunks = chunks(b, transfer_id)
    spooled = chunks(a, transfer_id)
    assert spooled > 0
    a.kill()
    assert chunks(a, transfer_id) == spooled  # the spool outlives the crash

    a.start()
    a.wait_status(request_id, Status.Value("SENT"))

    # A re-sent (from the end: B reported it complete), B answered with the same
    # receipt and changed nothing.
    b_after = transfer_row(b, transfer_id)
    assert b_after.completed_at == b_before.completed_at
    assert b_after.ciphertext_sha512 == b_before.ciphertext_sha512
    assert chunks(b, transfer_id) == b_chunks
    received_notes = b.rows(
        select(THREAD_MESSAGES.c.body).where(
            THREAD_MESSAGES.c.request_id == request_id,
            THREAD_MESSAGES.c.body.like("%-> DATA_RECEIVED%"),
        )
    )
    assert len(received_notes) == 1
    # A: sent once, disclosed once, spool gone, delivery done.
    assert chunks(a, transfer_id) == 0
    assert (
        a.scalar(
            select(func.count())
            .select_from(DISCLOSURES)
            .where(DISCLOSURES.c.request_id == request_id)
        )
        == 1
    )
    assert a.rows(
        select(OUTBOX.c.status).where(
            OUTBOX.c.request_id == request_id, OUTBOX.c.kind == "delivery"
        )
    ) == [("DONE",)]

    import_records(b, request_id)
    assert b.record_rows("B1") == a.record_rows("A1")
    a.wait_status(request_id, Status.Value("COMPLETE"))


def test_receiver_killed_during_import_keeps_nothing_and_retry_imports_once(
    cluster_on_each_database: Cluster,
) -> None:
    a, b, request_id = started(
        cluster_on_each_database,
        large_records(3_000),
        b_env={"RT_TEST_PAUSE_AT": "import.before_commit"},
    )
    approve(a, request_id, "A1")
    b.wait_status(request_id, Status.Value("DATA_RECEIVED"))

    # The registrar imports; B dies with every row written but not committed.
    future = b.rpc.ImportTransfer.future(
        registrar_pb2.ImportTransferRequest(request_id=request_id, actor="registrar-b"),
        timeout=60,
    )
    b.wait_log("test hook: paused at import.before_commit")
    b.kill()
    with pytest.raises(Exception):  # noqa: B017 - the call dies with the server
        future.result()

    # All or nothing: nothing.
    assert all(not rows for rows in b.record_rows("B1").values())
    assert b.scalar(select(func.count()).select_from(IMPORT_LEDGER)) == 0

    b.start()
    assert b.status(request_id) == Status.Value("DATA_RECEIVED")
    first = import_records(b, request_id)
    assert not first.already_imported
    assert b.record_rows("B1") == a.record_rows("A1")
    again = import_records(b, request_id)
    assert again.already_imported
    assert counts(again.imported) == counts(first.imported)
    assert b.record_rows("B1") == a.record_rows("A1")
    assert b.status(request_id) == Status.Value("IMPORTED")
    a.wait_status(request_id, Status.Value("COMPLETE"))
