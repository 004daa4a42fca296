"""The district's own database fails: a full disk, a lock held past its timeout.

The errors are injected in the driver, exactly where SQLite raises them
(``sqlite3.OperationalError``: "database or disk is full", "database is
locked"), on chosen statements of the receiving district, while both servers
run in this process so the test can switch the fault on and off. Whatever
failed must roll back whole, leave a state that is retried (by the sender's
delivery worker, or by the registrar), and leave no partial rows; once the
fault is gone the transfer completes exactly once.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from rt_server.flows.district import Limits
from rt_server.rpc.errors import DATABASE_UNAVAILABLE
from rt_server.server import DistrictServer
from rt_server.store.schema import IMPORT_LEDGER, OUTBOX, REQUESTS, TRANSFER_CHUNKS, TRANSFERS
from tests.faults.conftest import (
    Cluster,
    add_new_student,
    approve,
    create_request,
    import_records,
    large_records,
    rt,
    seed_student,
)
from tests.harness import wait_for
from tests.harness.processes import DistrictProcess, Status
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR, PRIOR_SCHOOL, stop_district_server

SSID = "1234567890"
DISK_FULL = "database or disk is full"
LOCKED = "database is locked"
# Small delivery frames (four Cobblestone chunks): a modest transfer spans many.
FRAME_BYTES = 4 * 16400


class DatabaseFaults:
    """Statements matching a pattern fail in the driver, after ``after`` of them succeeded."""

    def __init__(self, engine: Engine) -> None:
        self._lock = threading.Lock()
        self._rule: tuple[re.Pattern[str], str, int] | None = None
        self.seen = 0
        self.failures = 0
        for name in ("do_execute", "do_executemany", "do_execute_no_params"):
            event.listen(engine, name, self._maybe_fail)

    def fail(self, pattern: str, error: str, *, after: int = 0) -> None:
        with self._lock:
            self._rule = (re.compile(pattern), error, after)
            self.seen = self.failures = 0

    def clear(self) -> None:
        with self._lock:
            self._rule = None

    def _maybe_fail(self, cursor: Any, statement: str, *rest: Any) -> bool:
        with self._lock:
            if self._rule is None or not self._rule[0].search(statement):
                return False  # not handled here: the driver runs it
            self.seen += 1
            if self.seen <= self._rule[2]:
                return False
            self.failures += 1
            error = self._rule[1]
        raise sqlite3.OperationalError(error)


@dataclass
class InProcess:
    """A district served in this process, its database faults at hand."""

    district: DistrictProcess  # its config and read-only helpers (no subprocess here)
    server: DistrictServer
    faults: DatabaseFaults


@pytest.fixture
def pair(cluster: Cluster) -> Iterator[tuple[InProcess, InProcess]]:
    a = cluster.district(PRIOR, PRIOR_SCHOOL)
    b = cluster.district(NEW, NEW_SCHOOL)
    seed_student(a, "A1", ssid=SSID, records=large_records(3_000))
    started = []
    try:
        for district in (a, b):
            # Deliveries of more than one frame are stored frame by frame (not held
            # in memory until they verify): the frame-by-frame path is under test.
            limits = Limits(frame_bytes=FRAME_BYTES, buffered_delivery_bytes=FRAME_BYTES)
            server = DistrictServer(district.config, limits=limits)
            server.start()
            assert server.district is not None
            started.append(InProcess(district, server, DatabaseFaults(server.district.engine)))
        yield started[0], started[1]
    finally:
        for side in started:
            stop_district_server(side.server, grace=1)


def requested(a: InProcess, b: InProcess) -> str:
    add_new_student(b.district, "B1", SSID)
    request_id = create_request(b.district, "B1", PRIOR_SCHOOL)
    a.district.wait_status(request_id, Status.Value("PENDING"))
    return request_id


def delivery_attempts(a: InProcess, request_id: str) -> int:
    row = a.district.rows(
        select(OUTBOX).where(OUTBOX.c.request_id == request_id, OUTBOX.c.kind == "delivery")
    )[0]
    return int(row.attempts) if row.status == "QUEUED" else -1


def stored(b: InProcess, transfer_id: str) -> tuple[Any, list[tuple[int, int]]]:
    """B's transfer row and its (offset, length) pieces, in order."""
    transfer = b.district.rows(select(TRANSFERS).where(TRANSFERS.c.transfer_id == transfer_id))[0]
    pieces = b.district.rows(
        select(TRANSFER_CHUNKS.c.offset, func.length(TRANSFER_CHUNKS.c.data))
        .where(TRANSFER_CHUNKS.c.transfer_id == transfer_id)
        .order_by(TRANSFER_CHUNKS.c.seq)
    )
    return transfer, [(int(o), int(n)) for o, n in pieces]


def assert_tiled(transfer: Any, pieces: list[tuple[int, int]]) -> None:
    """The stored pieces are whole frames, back to back, ending at the received offset."""
    position = 0
    for offset, length in pieces:
        assert offset == position
        position += length
    assert position == transfer.received_offset


@pytest.mark.parametrize(
    ("statement", "error", "after"),
    [
        pytest.param(r"INSERT INTO transfer_chunks", DISK_FULL, 2, id="disk-full-storing-a-frame"),
        pytest.param(r"UPDATE transfers SET .*\bstate=", LOCKED, 0, id="lock-timeout-committing"),
    ],
)
def test_database_error_while_staging_rolls_back_and_the_delivery_resumes(
    pair: tuple[InProcess, InProcess], statement: str, error: str, after: int
) -> None:
    a, b = pair
    request_id = requested(a, b)
    b.faults.fail(statement, error, after=after)
    transfer_id = approve(a.district, request_id, "A1")

    # A retryable state: A's delivery is queued again with the reason, B keeps
    # whole frames only, and nothing counts as received.
    wait_for("A to retry the delivery twice", lambda: delivery_attempts(a, request_id) >= 2)
    assert b.faults.failures >= 2
    transfer, pieces = stored(b, transfer_id)
    assert transfer.state == "RECEIVING"
    assert_tiled(transfer, pieces)
    if after:  # failing frame by frame: exactly the frames before the fault are held
        assert len(pieces) == after and all(n == FRAME_BYTES for _, n in pieces)
    else:  # failing at the last step: every frame held, once, but not committed
        assert transfer.received_offset == transfer.ciphertext_bytes
    assert b.district.status(request_id) == Status.Value("PENDING")
    last_error = a.district.scalar(
        select(OUTBOX.c.last_error).where(
            OUTBOX.c.request_id == request_id, OUTBOX.c.kind == "delivery"
        )
    )
    assert "could not be reached" in last_error

    b.faults.clear()
    b.district.wait_status(request_id, Status.Value("DATA_RECEIVED"))
    a.district.wait_status(request_id, Status.Value("SENT"))
    transfer, pieces = stored(b, transfer_id)
    assert transfer.state == "RECEIVED"
    assert_tiled(transfer, pieces)
    assert transfer.received_offset == transfer.ciphertext_bytes
    import_records(b.district, request_id)
    assert b.district.record_rows("B1") == a.district.record_rows("A1")


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        pytest.param(r'INSERT INTO "?HIS"?', DISK_FULL, id="disk-full-writing-rows"),
        pytest.param(r"INSERT INTO import_ledger", LOCKED, id="lock-timeout-writing-ledger"),
    ],
)
def test_database_error_during_import_rolls_back_whole_and_a_retry_imports_once(
    pair: tuple[InProcess, InProcess], statement: str, error: str
) -> None:
    a, b = pair
    request_id = requested(a, b)
    approve(a.district, request_id, "A1")
    b.district.wait_status(request_id, Status.Value("DATA_RECEIVED"))

    b.faults.fail(statement, error)
    with pytest.raises(grpc.RpcError) as refused:
        import_records(b.district, request_id)
    # The registrar is told what happened and what to do; nothing was written.
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == DATABASE_UNAVAILABLE
    assert b.faults.failures == 1
    assert all(not rows for rows in b.district.record_rows("B1").values())
    assert b.district.scalar(select(func.count()).select_from(IMPORT_LEDGER)) == 0
    assert b.district.status(request_id) == Status.Value("DATA_RECEIVED")
    assert not b.district.rows(select(OUTBOX).where(OUTBOX.c.kind == "import_notice"))

    b.faults.clear()
    first = import_records(b.district, request_id)
    assert not first.already_imported
    assert b.district.record_rows("B1") == a.district.record_rows("A1")
    again = import_records(b.district, request_id)
    assert again.already_imported
    assert b.district.record_rows("B1") == a.district.record_rows("A1")
    assert (
        b.district.scalar(select(REQUESTS.c.status).where(REQUESTS.c.request_id == request_id))
        == "IMPORTED"
    )
    a.district.wait_status(request_id, Status.Value("COMPLETE"))


def test_import_refused_by_the_database_is_reported_to_the_registrar_by_rt(
    pair: tuple[InProcess, InProcess],
) -> None:
    a, b = pair
    request_id = requested(a, b)
    approve(a.district, request_id, "A1")
    b.district.wait_status(request_id, Status.Value("DATA_RECEIVED"))
    b.faults.fail(r'INSERT INTO "?HIS"?', DISK_FULL)
    done = rt(b.district, "import", request_id)
    assert done.returncode == 1
    assert "nothing was changed" in " ".join(done.stderr.split())
    b.faults.clear()
    assert rt(b.district, "import", request_id).returncode == 0
    assert b.district.status(request_id) == Status.Value("IMPORTED")
