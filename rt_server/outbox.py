"""The delivery worker's durable queue (the outbox pattern).

Whatever must reach the other district — a request, a decision, a delivery,
an import notice, a thread message — is written to ``outbox`` in the same
transaction as the state change that caused it, then sent by the worker. A
send that fails for a reason that may pass (the other district is down, busy,
or the link dropped) is retried with exponential backoff and full jitter; past
the horizon it becomes FAILED with the reason, and the registrar can retry it.

Items are claimed with a lease (``claimed_by`` / ``claimed_until``) inside a
``SELECT ... FOR UPDATE SKIP LOCKED`` transaction, so several replicas can share
one PostgreSQL database and a replica that dies mid-send leaves its item to be
taken again once the lease runs out. SQLite ignores the locking clause; its
single writer (BEGIN IMMEDIATE) gives the same guarantee.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Connection, Engine

from rt_client.errors import Duplicate, PeerUnavailable, RecordsTransferError
from rt_server.db import READ_ONLY
from rt_server.db.schema import OUTBOX, REQUESTS

log = logging.getLogger("rt_server.outbox")

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 1.0
    max_seconds: float = 300.0
    horizon: timedelta = timedelta(days=7)
    lease: timedelta = timedelta(minutes=10)

    def delay(self, attempts: int) -> timedelta:
        """Full jitter (AWS architecture blog): uniform in [0, min(max, base * 2^n)]."""
        ceiling = min(self.max_seconds, self.base_seconds * (2 ** min(attempts, 30)))
        return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - not crypto


@dataclass(frozen=True)
class OutboxItem:
    id: int
    kind: str
    request_id: str
    to_district: str
    payload: bytes
    attempts: int
    created_at: datetime


def enqueue(
    conn: Connection, *, kind: str, request_id: str, to_district: str, payload: bytes, now: datetime
) -> int:
    """Queue one item; call inside the transaction that made it necessary."""
    result = conn.execute(
        OUTBOX.insert().values(
            kind=kind,
            request_id=request_id,
            to_district=to_district,
            payload=payload,
            status="QUEUED",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


class Outbox:
    """Claims, completes and reschedules outbox items."""

    def __init__(self, engine: Engine, clock: Clock, worker_id: str, policy: RetryPolicy) -> None:
        self._engine = engine
        self._clock = clock
        self._worker_id = worker_id
        self.policy = policy

    def claim_next(self, request_id: str | None = None) -> OutboxItem | None:
        """Claim the next due item (of one request, when named) for this worker."""
        now = self._clock()
        query = (
            select(OUTBOX)
            .where(
                OUTBOX.c.status == "QUEUED",
                OUTBOX.c.next_attempt_at <= now,
                or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < now),
            )
            .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if request_id is not None:
            query = query.where(OUTBOX.c.request_id == request_id)
        with self._engine.begin() as conn:
            row = conn.execute(query).first()
            if row is None:
                return None
            conn.execute(
                update(OUTBOX)
                .where(OUTBOX.c.id == row.id)
                .values(claimed_by=self._worker_id, claimed_until=now + self.policy.lease)
            )
        return OutboxItem(
            id=row.id,
            kind=row.kind,
            request_id=row.request_id,
            to_district=row.to_district,
            payload=row.payload,
            attempts=row.attempts,
            created_at=row.created_at,
        )

    def next_due(self) -> datetime | None:
        with self._engine.connect().execution_options(**READ_ONLY) as conn:
            return conn.execute(
                select(OUTBOX.c.next_attempt_at)
                .where(OUTBOX.c.status == "QUEUED")
                .order_by(OUTBOX.c.next_attempt_at)
                .limit(1)
            ).scalar()

    def complete(self, conn: Connection, item: OutboxItem) -> None:
        """Mark done, inside the caller's transaction (with the state change it caused)."""
        conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id == item.id)
            .values(status="DONE", claimed_by=None, claimed_until=None, last_error=None)
        )

    def reschedule(self, item: OutboxItem, reason: str) -> bool:
        """Retry later; returns False (and marks FAILED) once past the horizon."""
        now = self._clock()
        attempts = item.attempts + 1
        failed = now - item.created_at >= self.policy.horizon
        next_attempt_at = now + self.policy.delay(attempts)
        with self._engine.begin() as conn:
            conn.execute(
                update(OUTBOX)
                .where(and_(OUTBOX.c.id == item.id, OUTBOX.c.status == "QUEUED"))
                .values(
                    attempts=attempts,
                    status="FAILED" if failed else "QUEUED",
                    next_attempt_at=next_attempt_at,
                    last_error=reason[:1000],
                    claimed_by=None,
                    claimed_until=None,
                )
            )
            # What the registrar sees of the retries ('rt show': attempts, next attempt).
            conn.execute(
                update(REQUESTS)
                .where(REQUESTS.c.request_id == item.request_id)
                .values(attempts=attempts, next_attempt_at=None if failed else next_attempt_at)
            )
        return not failed

    def complete_now(self, item: OutboxItem) -> None:
        with self._engine.begin() as conn:
            self.complete(conn, item)

    def fail_now(self, item: OutboxItem, reason: str) -> None:
        with self._engine.begin() as conn:
            self.fail(conn, item, reason)

    def fail(self, conn: Connection, item: OutboxItem, reason: str) -> None:
        conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id == item.id)
            .values(status="FAILED", last_error=reason[:1000], claimed_by=None, claimed_until=None)
        )

    def requeue_failed(self, conn: Connection, request_id: str, now: datetime) -> int:
        """A registrar's retry: failed items of the request start over, horizon and all."""
        result = conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.request_id == request_id, OUTBOX.c.status == "FAILED")
            .values(
                status="QUEUED", attempts=0, next_attempt_at=now, created_at=now, last_error=None
            )
        )
        return int(result.rowcount or 0)


# What the worker calls: one handler per kind. A handler completes the item
# itself (``Outbox.complete`` in its own transaction) when it succeeds.
Handler = Callable[[OutboxItem], None]
# Called when an item fails for good, to move the request to FAILED.
FailureHook = Callable[[OutboxItem, str], None]


class DeliveryWorker:
    """Background threads that drain the outbox."""

    def __init__(
        self,
        outbox: Outbox,
        handlers: dict[str, Handler],
        on_failure: FailureHook,
        *,
        threads: int = 4,
        idle_poll_seconds: float = 1.0,
    ) -> None:
        self._outbox = outbox
        self._handlers = handlers
        self._on_failure = on_failure
        self._threads = [
            threading.Thread(target=self._run, name=f"delivery-worker-{i}", daemon=True)
            for i in range(threads)
        ]
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._idle = idle_poll_seconds

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.wake()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def run_once(self, request_id: str | None = None) -> bool:
        """Process one due item (of one request, when named); False when there was none."""
        item = self._outbox.claim_next(request_id)
        if item is None:
            return False
        self.process(item)
        return True

    def process(self, item: OutboxItem) -> None:
        handler = self._handlers[item.kind]
        try:
            handler(item)
        except Duplicate:
            # The other side already has it: delivered, as far as we are concerned.
            self._outbox.complete_now(item)
        except PeerUnavailable as exc:
            if not self._outbox.reschedule(item, exc.diagnostics()):
                self._on_failure(
                    item, f"gave up after {item.attempts + 1} attempts: {exc.diagnostics()}"
                )
        except RecordsTransferError as exc:
            log.warning("outbox item %s (%s) failed for good: %s", item.id, item.kind, exc)
            self._outbox.fail_now(item, exc.diagnostics())
            self._on_failure(item, exc.diagnostics())
        except Exception:
            # A bug or a database hiccup: keep the item, try again later.
            log.exception("outbox item %s (%s) raised unexpectedly", item.id, item.kind)
            if not self._outbox.reschedule(item, "internal error"):
                self._on_failure(item, "internal error")

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                worked = self.run_once()
            except Exception:
                log.exception("delivery worker could not reach the database")
                worked = False
            if worked:
                continue
            with self._wake:
                if self._stopping.is_set():
                    break
                self._wake.wait(self._idle)
