"""The delivery worker's threads, around a real district database."""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import Engine

from rt_server.flows.outbox import DeliveryWorker, Outbox, RetryPolicy


def test_stopping_an_idle_worker_wakes_every_thread_at_once(engine: Engine) -> None:
    """A stop must not wait for idle threads to sleep out their poll (one each, in turn)."""
    outbox = Outbox(
        engine, lambda: dt.datetime.now(dt.UTC), "worker-1", RetryPolicy(base_seconds=1.0)
    )
    worker = DeliveryWorker(
        outbox, handlers={}, on_failure=lambda *_: None, threads=4, idle_poll_seconds=60.0
    )
    worker.start()
    time.sleep(0.3)  # every thread has found nothing to do and waits for work or a stop
    started = time.monotonic()
    worker.stop(timeout=30.0)
    took = time.monotonic() - started
    # Woken one by one, three threads would sleep out their 60 s poll (the stop's
    # 30 s of patience would run out first).
    assert took < 10.0, f"the stop took {took:.1f} s"
    assert not any(t.is_alive() for t in worker._threads)
