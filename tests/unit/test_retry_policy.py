"""The delivery worker's retry delays (rt_server.flows.outbox.RetryPolicy)."""

from __future__ import annotations

from rt_server.flows.outbox import RetryPolicy


def test_a_retry_soon_hint_is_short_and_bounded_whatever_the_attempts() -> None:
    policy = RetryPolicy(base_seconds=30.0, max_seconds=300.0)
    for _ in range(200):
        assert 1.5 <= policy.soon(3.0).total_seconds() <= 3.0
        # The backoff it replaces: minutes by the fifth attempt.
        assert policy.delay(5).total_seconds() >= 150.0
    # Never beyond the policy's own maximum (fast test policies stay fast).
    fast = RetryPolicy(base_seconds=0.05, max_seconds=0.2)
    assert all(fast.soon(10.0).total_seconds() <= 0.2 for _ in range(50))
