"""Deliveries that wait: why, until when, and what a registrar can do about it.

- the receiver cannot verify the sender (its registry is down and it has no
  cached entry): it says so with a retryable refusal the sender tells apart
  from "down", and the sender tries again within seconds rather than backing
  off for minutes; ``rt show`` says why each send waits and when it is tried next;
- ``rt retry`` pushes a waiting send now (the horizon is unchanged);
- ``rt approve --wait`` shows the reason as it happens, in a terminal and piped;
  after Ctrl-C it re-attaches, and ``rt wait`` waits for the next status.
"""

from __future__ import annotations

import os
import pty
import select as io_select
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from rt_server.store.schema import OUTBOX
from tests.faults.conftest import (
    Cluster,
    add_new_student,
    create_request,
    import_records,
    rt,
    rt_json,
    seed_student,
    small_records,
)
from tests.harness import wait_for
from tests.harness.processes import DistrictProcess, Status, rt_command
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR, PRIOR_SCHOOL

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

SSID = "1234567890"
# A's backoff after a first failed send: 30 to 60 s. Whatever arrives sooner
# than that arrived because of what the test is about, not the backoff.
SLOW_RETRY = {"retry_base_seconds": 30.0, "retry_max_seconds": 300.0}


def _requested(a: DistrictProcess, b: DistrictProcess) -> str:
    """A holds student A1 with records; B asked for them; both running; A has it PENDING."""
    seed_student(a, "A1", ssid=SSID, records=small_records(7))
    a.start()
    b.start()
    add_new_student(b, "B1", SSID)
    request_id = create_request(b, "B1", PRIOR_SCHOOL)
    a.wait_status(request_id, Status.Value("PENDING"))
    return request_id


def _outbox(a: DistrictProcess, request_id: str) -> list[object]:
    return a.rows(select(OUTBOX).where(OUTBOX.c.request_id == request_id).order_by(OUTBOX.c.id))


def _delivery_attempted(a: DistrictProcess, request_id: str) -> Callable[[], bool]:
    def probe() -> bool:
        return any(o.kind == "delivery" and o.attempts >= 1 for o in _outbox(a, request_id))  # type: ignore[attr-defined]

    return probe


def test_a_receiver_that_cannot_verify_the_sender_is_retried_within_seconds(
    cluster: Cluster,
) -> None:
    a = cluster.district(PRIOR, PRIOR_SCHOOL, directory_ttl_seconds=1, **SLOW_RETRY)
    b = cluster.district(NEW, NEW_SCHOOL, directory_ttl_seconds=1)
    request_id = _requested(a, b)

    # The registry goes down and B restarts: B has no entry of A to verify it by.
    cluster.registry.stop()
    assert b.terminate() == 0
    b.start()
    done = rt(a, "approve", request_id, "--student", "A1")
    assert done.returncode == 0, done.stderr
    wait_for("A's first delivery attempt", _delivery_attempted(a, request_id))

    # What A's registrar sees: why each send waits, and when it is tried next.
    shown = rt_json(a, "show", request_id)
    waiting = {w["kind"]: w for w in shown["pending_sends"]}
    assert set(waiting) == {"decision", "delivery"}, shown
    for send in waiting.values():
        assert send["to_district"] == NEW
        assert "could not verify this district" in send["last_error"], send
        assert send["next_attempt_at"]
    text = rt(a, "show", request_id)
    assert text.returncode == 0, text.stderr
    flat = " ".join(text.stdout.split())
    assert f"delivery to district {NEW}" in flat, text.stdout
    assert "could not verify this district" in flat and "next attempt in" in flat, text.stdout
    # B's refusal told A nothing about B's directory beyond "try again soon".
    assert "directory unavailable" in b.log()

    # Everything is back: delivered within seconds, not after A's 30 s backoff.
    cluster.registry.restart()
    back = time.monotonic()
    a.wait_status(request_id, Status.Value("SENT"), timeout=20)
    b.wait_status(request_id, Status.Value("DATA_RECEIVED"), timeout=10)
    assert time.monotonic() - back < 20


def test_rt_retry_pushes_a_waiting_delivery_now_and_keeps_its_horizon(cluster: Cluster) -> None:
    a = cluster.district(PRIOR, PRIOR_SCHOOL, **SLOW_RETRY)
    b = cluster.district(NEW, NEW_SCHOOL)
    request_id = _requested(a, b)
    assert b.terminate() == 0
    assert rt(a, "approve", request_id, "--student", "A1").returncode == 0
    wait_for("A's first delivery attempt", _delivery_attempted(a, request_id))
    before = {o.kind: o for o in _outbox(a, request_id)}  # type: ignore[attr-defined]
    shown = rt(a, "show", request_id)
    assert "could not be reached" in shown.stdout and "next attempt in" in shown.stdout

    b.start()
    # A registrar pushes it rather than waiting out the backoff. (gRPC may still
    # be waiting to reconnect to B for a few seconds: then pushing again works.)
    for _ in range(6):
        pushed = rt(a, "retry", request_id)
        assert pushed.returncode == 0, pushed.stderr
        flat = " ".join(pushed.stdout.split())
        assert "now" in flat and "horizon" in flat, pushed.stdout
        try:
            a.wait_status(request_id, Status.Value("SENT"), timeout=4)
            break
        except AssertionError:
            continue
    else:
        raise AssertionError(f"pushing never delivered:\n{a.log_tail()}")
    b.wait_status(request_id, Status.Value("DATA_RECEIVED"))
    after = {o.kind: o for o in _outbox(a, request_id)}  # type: ignore[attr-defined]
    # Pushed, not restarted: the same items, queued when they were, attempts counted on.
    assert after["delivery"].created_at == before["delivery"].created_at  # type: ignore[attr-defined]
    assert after["delivery"].attempts >= before["delivery"].attempts  # type: ignore[attr-defined]

    # Nothing waits any more: a retry says so and changes nothing.
    again = rt(a, "retry", request_id)
    assert again.returncode == 1 and "nothing" in again.stderr.lower(), again
    assert "Traceback" not in again.stderr


class _Lines:
    """A child's output stream, read line by line in a thread."""

    def __init__(self, read: Callable[[], bytes]) -> None:
        self.text = ""
        self._read = read
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = self._read()
            except OSError:
                return
            if not chunk:
                return
            self.text += chunk.decode("utf-8", "replace")

    def wait(self, *needles: str, timeout: float = 30.0) -> None:
        def seen() -> bool:
            flat = " ".join(self.text.split())
            return all(n in flat for n in needles)

        try:
            wait_for(f"{needles} in the output", seen, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; output so far:\n{self.text[-3000:]}") from None


def _rt_args(district: DistrictProcess, *args: str) -> list[str]:
    return [*rt_command(), *args, "--config", str(district.config_path), "--as", "registrar"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RT_")}
    return {**env, "COLUMNS": "200"}


def _piped(district: DistrictProcess, *args: str) -> tuple[subprocess.Popen[bytes], _Lines]:
    child = subprocess.Popen(
        _rt_args(district, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()
    )
    assert child.stderr is not None
    return child, _Lines(lambda: os.read(child.stderr.fileno(), 4096))  # type: ignore[union-attr]


def test_approve_wait_shows_why_it_waits_and_reattaches_after_ctrl_c(cluster: Cluster) -> None:
    a = cluster.district(PRIOR, PRIOR_SCHOOL, retry_base_seconds=1.0, retry_max_seconds=4.0)
    b = cluster.district(NEW, NEW_SCHOOL)
    request_id = _requested(a, b)
    assert b.terminate() == 0  # B is down

    # In a terminal: the bar says why it waits, as it happens.
    leader, follower = pty.openpty()
    tty = subprocess.Popen(
        _rt_args(a, "approve", request_id, "--student", "A1", "--wait"),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**_env(), "TERM": "xterm"},
    )
    os.close(follower)

    def read_tty() -> bytes:
        ready, _, _ = io_select.select([leader], [], [], 0.5)
        return os.read(leader, 4096) if ready else b" "

    screen = _Lines(read_tty)
    try:
        screen.wait(f"district {NEW} could not be reached", "next attempt in")
        tty.send_signal(signal.SIGINT)  # Ctrl-C
        assert tty.wait(15) == 130
        screen.wait(f"rt wait {request_id}")
    finally:
        if tty.poll() is None:
            tty.kill()
        os.close(leader)
    assert "Traceback" not in screen.text

    # Piped, the same command again: it re-attaches (no "already approved" error)
    # and prints a line each time the reason changes.
    child, err = _piped(a, "approve", request_id, "--student", "A1", "--wait")
    try:
        err.wait("already approved")
        err.wait(f"district {NEW} could not be reached", "next attempt in")
        b.start()
        out, _ = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err.text
    assert "SENT" in out.decode(), out
    assert "Traceback" not in err.text
    b.wait_status(request_id, Status.Value("DATA_RECEIVED"))

    # ``rt wait`` waits for the request's next status: COMPLETE once B imports.
    waiter, waiter_err = _piped(a, "wait", request_id)
    try:
        waiter_err.wait("SENT")
        import_records(b, request_id)
        out, _ = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0, waiter_err.text
    assert "COMPLETE" in out.decode(), out
    # Nothing is under way any more: it says so at once.
    done = rt(a, "wait", request_id)
    assert done.returncode == 0 and "COMPLETE" in done.stdout, done
