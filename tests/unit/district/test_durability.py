"""What a transaction costs the disk: durable commits, NOT_DURABLE bookkeeping, WAL checkpoints."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from sqlalchemy import Engine, select, text

from rt_server.store import outbox_queue
from rt_server.store.checkpoint import WalCheckpointer
from rt_server.store.engine import begin_not_durable, make_engine
from rt_server.store.schema import OUTBOX, create_schema

# PRAGMA synchronous reads back as a number.
NORMAL, FULL = 1, 2


def _synchronous(conn) -> int:  # type: ignore[no-untyped-def]
    return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


def sqlite_engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'district.db'}")
    create_schema(engine)
    return engine


def test_a_not_durable_transaction_relaxes_only_itself(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    try:
        with engine.begin() as conn:
            assert _synchronous(conn) == FULL
        with begin_not_durable(engine) as conn:
            assert _synchronous(conn) == NORMAL
        # The pool hands the same connection out again: durable once more.
        with engine.begin() as conn:
            assert _synchronous(conn) == FULL
        with engine.connect() as conn:
            assert _synchronous(conn) == FULL
    finally:
        engine.dispose()


def test_the_checkpointer_copies_the_wal_into_the_database_file(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    database = tmp_path / "district.db"
    checkpointer = WalCheckpointer(engine, interval_seconds=0.05)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO seen_messages VALUES (:m, 'notice', '2025-01-01 00:00:00')"),
                [{"m": f"{i:036d}"} for i in range(3000)],
            )
        # Far below the automatic checkpoint: the rows are in the WAL only.
        before = database.stat().st_size
        checkpointer.start()
        deadline = time.monotonic() + 10
        while database.stat().st_size <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert database.stat().st_size > before
    finally:
        checkpointer.stop()
        engine.dispose()


def test_an_item_queued_with_a_claim_is_held_by_that_worker(engine: Engine) -> None:
    until = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    claimed = outbox_queue.enqueue(
        engine,
        kind="decision",
        request_id="r1",
        to_district="1964733",
        payload=b"x",
        claim=outbox_queue.OutboxClaim("worker-1", until),
    )
    free = outbox_queue.enqueue(
        engine, kind="decision", request_id="r1", to_district="1964733", payload=b"y"
    )
    with engine.connect() as conn:
        rows = dict(
            (r.id, (r.claimed_by, r.claimed_until))
            for r in conn.execute(select(OUTBOX.c.id, OUTBOX.c.claimed_by, OUTBOX.c.claimed_until))
        )
    assert rows[claimed] == ("worker-1", until)
    assert rows[free] == (None, None)
