"""The delivery worker's durable queue (the outbox pattern).

Whatever must reach the other district — a request, a decision, a delivery,
an import notice, a thread message — is written to ``outbox`` in the same
transaction as the state change that caused it, then sent by the worker. A
send that fails for a reason that may pass (the other district is down, busy,
or the link dropped) is retried with exponential backoff and equal jitter (one
that the other district said to retry soon, ``RetrySoon``, after its short
hint instead: it is up, only not ready for us yet); past
the horizon it becomes FAILED with the reason, and the registrar can retry it.

Items are claimed with a lease (``claimed_by`` / ``claimed_until``) inside a
``SELECT ... FOR UPDATE SKIP LOCKED`` transaction, so several replicas can share
one PostgreSQL database and a replica that dies mid-send leaves its item to be
taken again once the lease runs out. The lease is short and a live worker
renews it while it works (a heartbeat), so a long delivery keeps its item and
a dead replica's items are taken over within a lease. SQLite ignores the
locking clause; its single writer (BEGIN IMMEDIATE) gives the same guarantee.

The queue's own bookkeeping (claims, lease renewals, retry schedules, an item
marked done after a send) commits ``NOT_DURABLE``: lost in a power failure, an
item is only sent again, and the other district recognises a resend.

Here: when to claim, retry, give up (``RetryPolicy``, ``DeliveryWorker``);
its statements are in ``rt_server.store.outbox``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from rt_client._serving import logged_request
from rt_client.errors import Duplicate, PeerUnavailable, RecordsTransferError, RetrySoon
from rt_client.ids import RequestId
from rt_server.core import due_dates
from rt_server.flows.metrics import DistrictMetrics, retry_reason
from rt_server.store import outbox as queue
from rt_server.store.outbox import ClaimLost, OutboxItem
from rt_server.store.outbox_queue import OutboxClaim
from rt_server.store.units import Database, DatabaseFailure, Unit

__all__ = [
    "ClaimLost",
    "DeliveryWorker",
    "FailureHook",
    "Handler",
    "Outbox",
    "OutboxItem",
    "RetryPolicy",
]

log = logging.getLogger("rt_server.flows.outbox")

Clock = due_dates.Clock


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 1.0
    max_seconds: float = 300.0
    horizon: timedelta = timedelta(days=7)
    # How long a claimed item stays another replica's after its last heartbeat.
    lease: timedelta = timedelta(seconds=60)

    def delay(self, attempts: int) -> timedelta:
        """Equal jitter (AWS architecture blog): uniform in [d/2, d], d = min(max, base * 2^n).

        Never less than half the backoff, so retries stay spread out however unlucky the draw.
        """
        ceiling = min(self.max_seconds, self.base_seconds * (2 ** min(attempts, 30)))
        return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - not crypto

    def soon(self, retry_after: float) -> timedelta:
        """The delay after a refusal that said when to try again (``RetrySoon``): that
        hint (already bounded to seconds), never more than the backoff's maximum, with
        equal jitter; the other district is up, so there is nothing to back off from."""
        ceiling = min(self.max_seconds, retry_after)
        return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - not crypto


class Outbox:
    """This worker's outbox: claims, completes and reschedules items (``store.outbox``)."""

    def __init__(self, engine: Database, clock: Clock, worker_id: str, policy: RetryPolicy) -> None:
        self._engine = engine
        self._clock = clock
        self._worker_id = worker_id
        self.policy = policy

    def claim_next(self, request_id: RequestId | None = None) -> OutboxItem | None:
        """Claim the next due item (of one request, when named) for this worker."""
        now = self._clock()
        return queue.claim_next(
            self._engine, self._worker_id, now, now + self.policy.lease, request_id
        )

    def claim(self) -> OutboxClaim:
        """A claim for items this worker queues for itself (``outbox_queue.enqueue(claim=...)``)."""
        return OutboxClaim(self._worker_id, self._clock() + self.policy.lease)

    def claimed_items(self, request_id: RequestId) -> list[OutboxItem]:
        """The items of ``request_id`` this worker holds and has not sent yet (a read)."""
        return queue.claimed_items(self._engine, self._worker_id, request_id)

    def complete(self, conn: Unit, item: OutboxItem) -> None:
        """Mark done, inside the caller's unit (with the state change it caused)."""
        queue.complete(conn, item.id)

    def reschedule(self, item: OutboxItem, reason: str, retry_after: float | None = None) -> bool:
        """Retry later (after ``retry_after`` seconds when the other side said so, else
        with backoff); returns False (and marks FAILED) once past the horizon."""
        now = self._clock()
        attempts = item.attempts + 1
        failed = now - item.created_at >= self.policy.horizon
        if retry_after is None:
            next_attempt_at = now + self.policy.delay(attempts)
        else:
            next_attempt_at = now + self.policy.soon(retry_after)
        ours = queue.reschedule(
            self._engine,
            item.id,
            item.request_id,
            self._worker_id,
            attempts=attempts,
            failed=failed,
            next_attempt_at=next_attempt_at,
            reason=reason,
        )
        if not ours:
            log.info("outbox item %s is no longer ours; leaving it be", item.id)
            return True
        if failed:
            log.warning(
                "outbox item %s (%s to %s): giving up after %d attempts: %s",
                item.id, item.kind, item.to_district, attempts, reason,
            )  # fmt: skip
        else:
            log.info(
                "outbox item %s (%s to %s): attempt %d failed (%s); next in %.1f s",
                item.id, item.kind, item.to_district, attempts, reason,
                (next_attempt_at - now).total_seconds(),
            )  # fmt: skip
        return not failed

    def renew(self, item_ids: list[int]) -> set[int]:
        """Extend this worker's lease on ``item_ids``; returns the ids no longer ours."""
        if not item_ids:
            return set()
        return queue.renew(
            self._engine, self._worker_id, item_ids, self._clock() + self.policy.lease
        )

    def release(self, item: OutboxItem, reason: str) -> None:
        """Let go of an item without counting an attempt: due now, for any worker."""
        queue.release(self._engine, item.id, self._worker_id, self._clock(), reason)

    def release_mine(self, reason: str) -> int:
        """Release every item this worker still holds (at shutdown). Returns how many."""
        return queue.release_all(self._engine, self._worker_id, self._clock(), reason)

    def complete_now(self, item: OutboxItem) -> None:
        queue.complete_now(self._engine, item.id)

    def fail_now(self, item: OutboxItem, reason: str) -> None:
        queue.fail(self._engine, item.id, reason)


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
        metrics: DistrictMetrics | None = None,
    ) -> None:
        self._outbox = outbox
        self._metrics = metrics or DistrictMetrics()
        self._handlers = handlers
        self._on_failure = on_failure
        self._threads = [
            threading.Thread(target=self._run, name=f"delivery-worker-{i}", daemon=True)
            for i in range(threads)
        ]
        self._wake = threading.Condition()
        # Items queued already claimed by this worker (``hand_over``), for the
        # next idle thread: no claiming transaction, no wait for a poll.
        self._handed: deque[OutboxItem] = deque()
        self._stopping = threading.Event()
        self._idle = idle_poll_seconds
        # Items being worked on, in any thread (workers, or a registrar call
        # draining its request): the heartbeat keeps their leases.
        self._in_flight: dict[int, int] = {}
        self._in_flight_lock = threading.Lock()
        self._heartbeat = threading.Thread(
            target=self._renew_leases, name="delivery-heartbeat", daemon=True
        )
        self._heartbeat_stop = threading.Event()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        self._heartbeat.start()

    def claim(self) -> OutboxClaim:
        """For a change that queues items: they are queued held by this worker."""
        return self._outbox.claim()

    def hand_over(self, request_id: RequestId) -> None:
        """Send the items of ``request_id`` queued with ``claim()``, in the worker's threads.

        Called once the change that queued them has committed. Their leases are
        kept from now on (the heartbeat), so they may wait their turn.
        """
        try:
            items = self._outbox.claimed_items(request_id)
        except Exception:
            # The change itself is committed: its items are sent once their lease runs out.
            log.exception("could not hand the outbox items of a request to the worker")
            return
        for item in items:
            self._hold(item)
        with self._wake:
            self._handed.extend(items)
            self._wake.notify(len(items))

    def run_claimed(self, request_id: RequestId) -> None:
        """Send the items of ``request_id`` queued with ``claim()``, in this thread, now."""
        for item in self._outbox.claimed_items(request_id):
            self.process(item)

    def wake(self) -> None:
        """One more item is due: wake one idle thread (it wakes the next if it finds one)."""
        with self._wake:
            self._wake.notify()

    def stop(self, timeout: float = 10.0, *, cut: Callable[[], object] | None = None) -> None:
        """Claim nothing new; let the items under way finish for up to ``timeout`` seconds.

        Then ``cut`` (if given) cancels the streams still under way: their
        handlers fail with ``PeerUnavailable`` and their items are released,
        due at once and with no attempt counted, for the next worker to resume.
        Whatever is still ours after that is released too.
        """
        self._stopping.set()
        with self._wake:  # every idle thread, not one: each would sleep out its idle wait
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        if cut is not None and any(t.is_alive() for t in self._threads):
            cut()
            for thread in self._threads:
                thread.join(5.0)
        self._heartbeat_stop.set()
        if self._heartbeat.is_alive():
            self._heartbeat.join(5.0)
        try:
            released = self._outbox.release_mine("released by a shutdown")
        except Exception:
            log.exception("could not release this worker's outbox items at shutdown")
        else:
            if released:
                log.info("shutdown: released %d outbox item(s) for the next worker", released)

    def run_once(self, request_id: RequestId | None = None) -> bool:
        """Process one due item (of one request, when named); False when there was none."""
        item = self._outbox.claim_next(request_id)
        if item is None:
            return False
        # More may be due (an approval queues two items): the next idle thread
        # looks, rather than every thread racing for each item.
        self.wake()
        self.process(item)
        return True

    def process(self, item: OutboxItem) -> None:
        self._hold(item)
        token = logged_request.set(item.request_id)
        try:
            self._process(item)
        finally:
            logged_request.reset(token)
            self._let_go(item)

    def _hold(self, item: OutboxItem) -> None:
        """Count ``item`` in flight: the heartbeat keeps its lease until ``_let_go``."""
        with self._in_flight_lock:
            self._in_flight[item.id] = self._in_flight.get(item.id, 0) + 1

    def _let_go(self, item: OutboxItem) -> None:
        with self._in_flight_lock:
            self._in_flight[item.id] -= 1
            if not self._in_flight[item.id]:
                del self._in_flight[item.id]

    def _process(self, item: OutboxItem) -> None:
        handler = self._handlers[item.kind]
        try:
            handler(item)
        except ClaimLost:
            log.info("outbox item %s (%s) was taken over by another worker", item.id, item.kind)
        except Duplicate:
            # The other side already has it: delivered, as far as we are concerned.
            self._outbox.complete_now(item)
        except PeerUnavailable as exc:
            if self._stopping.is_set():
                # Cut by our own shutdown (see ``stop``): not the other side's
                # failure, so no attempt is counted; it resumes on restart.
                self._outbox.release(item, "interrupted by a shutdown; resumes on restart")
                return
            self._metrics.outbox_retry(item.kind, retry_reason(exc))
            if not self._outbox.reschedule(
                item, exc.diagnostics(), exc.retry_after if isinstance(exc, RetrySoon) else None
            ):
                self._on_failure(
                    item, f"gave up after {item.attempts + 1} attempts: {exc.diagnostics()}"
                )
        except RecordsTransferError as exc:
            log.warning("outbox item %s (%s) failed for good: %s", item.id, item.kind, exc)
            self._outbox.fail_now(item, exc.diagnostics())
            self._on_failure(item, exc.diagnostics())
        except DatabaseFailure as exc:
            # Our own database failed (a lock held past the timeout, a full disk,
            # a lost connection): the transaction rolled back; try again later.
            # Only the driver's message is logged (parameters may be student data).
            log.warning(
                "outbox item %s (%s): the database could not complete it: %s",
                item.id, item.kind, exc.orig,
            )  # fmt: skip
            reason = "this district's database could not complete it (busy, full or unreachable)"
            self._metrics.outbox_retry(item.kind, retry_reason(exc))
            if not self._outbox.reschedule(item, reason):
                self._on_failure(item, reason)
        except Exception as exc:
            # A bug: keep the item, try again later.
            log.exception("outbox item %s (%s) raised unexpectedly", item.id, item.kind)
            self._metrics.outbox_retry(item.kind, retry_reason(exc))
            if not self._outbox.reschedule(item, "internal error"):
                self._on_failure(item, "internal error")

    def _renew_leases(self) -> None:
        """Renew the leases of the items in flight, three times per lease."""
        interval = max(self._outbox.policy.lease.total_seconds() / 3, 0.05)
        # Runs until the worker threads are done (``stop``), not just told to stop:
        # a delivery finishing within the shutdown grace keeps its lease.
        while not self._heartbeat_stop.wait(interval):
            with self._in_flight_lock:
                ids = sorted(self._in_flight)
            try:
                lost = self._outbox.renew(ids)
            except Exception:
                log.exception("delivery worker could not renew its leases")
                continue
            with self._in_flight_lock:
                lost &= set(self._in_flight)
            if lost:
                log.warning("outbox items %s are no longer ours", sorted(lost))

    def _run(self) -> None:
        while not self._stopping.is_set():
            handed = self._take_handed()
            if handed is not None:
                try:
                    self.process(handed)
                finally:
                    self._let_go(handed)  # hand_over's hold (process had its own)
                continue
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
                if not self._handed:
                    self._wake.wait(self._idle)

    def _take_handed(self) -> OutboxItem | None:
        with self._wake:
            return self._handed.popleft() if self._handed else None
