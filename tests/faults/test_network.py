"""Links that drop, a district that is down, a registry that is down.

- the connection is cut at random points of a delivery (a loopback TCP proxy in
  front of the receiver): the delivery resumes from what the receiver stored,
  and the receiver ends up with every byte exactly once;
- the prior district is down when the request is created: it waits in QUEUED
  and goes through when the district comes back; down past the horizon it is
  FAILED with the reason (``rt requests``, the thread), and ``rt retry`` works;
- the registry is down: cached, signed, unexpired directory entries keep
  transfers going; once they expire new transfers are refused, clearly.
"""

from __future__ import annotations

import random
import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from protos.rt.v1 import registrar_pb2
from rt_client.directory import utc_now
from rt_server.store.schema import OUTBOX, REQUESTS, TRANSFER_CHUNKS, TRANSFERS
from tests.faults._proxy import CuttingProxy
from tests.faults.conftest import (
    Cluster,
    add_new_student,
    approve,
    counts,
    create_request,
    import_records,
    large_records,
    retry_until,
    rt,
    rt_json,
    seed_student,
    small_records,
)
from tests.harness import free_port, wait_for
from tests.harness.processes import Status
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR, PRIOR_SCHOOL

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

SSID = "1234567890"


def test_connection_cut_at_random_frames_resumes_and_stores_each_byte_once(
    cluster: Cluster,
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    listen = free_port()
    proxy = CuttingProxy(listen)
    try:
        a = cluster.district(PRIOR, PRIOR_SCHOOL)
        # B publishes the proxy's address; it listens behind it.
        b = cluster.district(
            NEW, NEW_SCHOOL, endpoint=proxy.address, peer_listen=f"127.0.0.1:{listen}"
        )
        seed_student(a, "A1", ssid=SSID, records=large_records(40_000))
        # Paced a little, so that what has passed the proxy has reached B's
        # database too: a cut then always falls after frames B has stored.
        a.start(env={"RT_TEST_FRAME_DELAY_MS": "100"})
        b.start()
        add_new_student(b, "B1", SSID)
        request_id = create_request(b, "B1", PRIOR_SCHOOL)
        a.wait_status(request_id, Status.Value("PENDING"))
        # About 4.8 MB of ciphertext goes A -> B (five ~1 MiB frames): cut the first
        # connection past its second frame, the second one anywhere in its first third.
        size = 4_800_000
        proxy.plan_cuts(
            [rng.randrange(size * 9 // 20, size * 17 // 20), rng.randrange(size // 10, size // 3)]
        )
        transfer_id = approve(a, request_id, "A1")

        b.wait_status(request_id, Status.Value("DATA_RECEIVED"))
        a.wait_status(request_id, Status.Value("SENT"))
    finally:
        proxy.close()

    why = f"(seed {seed}, cuts {proxy.cuts})"
    assert len(proxy.cuts) == 2, why
    offsets = [
        int(m)
        for m in re.findall(rf"resuming transfer {transfer_id} to \d+ at byte (\d+)", a.log())
    ]
    assert offsets and all(o > 0 for o in offsets), why
    # Every byte stored once: the chunks tile the ciphertext without gap or overlap.
    transfer = b.rows(select(TRANSFERS).where(TRANSFERS.c.transfer_id == transfer_id))[0]
    pieces = b.rows(
        select(TRANSFER_CHUNKS.c.offset, func.length(TRANSFER_CHUNKS.c.data))
        .where(TRANSFER_CHUNKS.c.transfer_id == transfer_id)
        .order_by(TRANSFER_CHUNKS.c.seq)
    )
    position = 0
    for offset, length in pieces:
        assert offset == position, why
        position += length
    assert position == transfer.ciphertext_bytes == transfer.received_offset, why
    # ... and B verified it whole (trailer signature, every chunk, every row).
    received = b.call("GetRequest", registrar_pb2.RequestRef(request_id=request_id)).received
    assert counts(received) == {code: len(rows) for code, rows in a.record_rows("A1").items()}


def test_request_waits_in_queued_while_the_prior_district_is_down(cluster: Cluster) -> None:
    a = cluster.district(PRIOR, PRIOR_SCHOOL)
    b = cluster.district(NEW, NEW_SCHOOL)
    seed_student(a, "A1", ssid=SSID, records=small_records(1))
    b.start()
    add_new_student(b, "B1", SSID)
    request_id = create_request(b, "B1", PRIOR_SCHOOL)
    assert b.status(request_id) == Status.Value("QUEUED")

    # The delivery worker keeps trying, with backoff; the registrar sees it.
    def attempts() -> int | None:
        n = b.scalar(select(REQUESTS.c.attempts).where(REQUESTS.c.request_id == request_id))
        return n if n >= 3 else None

    wait_for("three failed attempts", attempts)
    shown = rt_json(b, "show", request_id)
    assert shown["summary"]["status"] == "QUEUED"
    assert int(shown["attempts"]) >= 3
    outbox = b.rows(select(OUTBOX).where(OUTBOX.c.request_id == request_id))
    assert [(o.kind, o.status) for o in outbox] == [("request", "QUEUED")]
    assert "could not be reached" in outbox[0].last_error

    a.start()
    b.wait_status(request_id, Status.Value("PENDING"))
    a.wait_status(request_id, Status.Value("PENDING"))
    approve(a, request_id, "A1")
    b.wait_status(request_id, Status.Value("DATA_RECEIVED"))
    import_records(b, request_id)
    assert b.record_rows("B1") == a.record_rows("A1")
    a.wait_status(request_id, Status.Value("COMPLETE"))


def test_down_past_the_horizon_is_failed_with_the_reason_and_retry_works(
    cluster: Cluster,
) -> None:
    a = cluster.district(PRIOR, PRIOR_SCHOOL)
    b = cluster.district(NEW, NEW_SCHOOL, retry_horizon_seconds=3.0)
    seed_student(a, "A1", ssid=SSID, records=small_records(2))
    b.start()
    add_new_student(b, "B1", SSID)
    request_id = create_request(b, "B1", PRIOR_SCHOOL)
    b.wait_status(request_id, Status.Value("FAILED"), timeout=30)

    # What the registrar sees: the status and the reason in the list ...
    listed = {r["request_id"]: r for r in rt_json(b, "requests", "--direction", "out")}
    assert listed[request_id]["status"] == "FAILED"
    reason = listed[request_id]["status_reason"]
    assert f"could not deliver the request to district {PRIOR}" in reason
    assert "gave up after" in reason
    table = rt(b, "requests", "--status", "FAILED")
    short_id = listed[request_id]["short_id"]  # what the table shows, and commands take
    assert request_id.startswith(short_id) and len(short_id) >= 8
    assert table.returncode == 0 and short_id in table.stdout and "FAILED" in table.stdout
    # ... and in the request's thread.
    thread = b.call("ListMessages", registrar_pb2.RequestRef(request_id=request_id))
    assert any("-> FAILED" in m.body and "gave up after" in m.body for m in thread.messages)

    # A registrar's retry while A is still down starts the sends over, horizon
    # included: well past the first horizon, the request waits in QUEUED again
    # rather than failing at its first refusal.
    created = b.scalar(select(OUTBOX.c.created_at).where(OUTBOX.c.request_id == request_id))
    wait_for("twice the horizon to pass", lambda: utc_now() > created + timedelta(seconds=6))
    retried = rt(b, "retry", request_id)
    assert retried.returncode == 0, retried.stderr
    assert b.status(request_id) == Status.Value("QUEUED")

    def failed_once_more() -> bool:
        row = b.rows(select(OUTBOX).where(OUTBOX.c.request_id == request_id))[0]
        return row.status == "FAILED" or row.attempts >= 1

    wait_for("a failed attempt after the retry", failed_once_more)
    assert b.status(request_id) == Status.Value("QUEUED")

    # A comes back. (On a slow machine the short horizon may have run out again
    # meanwhile: then the registrar retries once more.)
    a.start()

    def settled() -> int | None:
        status = b.status(request_id)
        return status if status in (Status.Value("PENDING"), Status.Value("FAILED")) else None

    if wait_for("the request to reach A (or fail again)", settled) == Status.Value("FAILED"):
        retry_until(b, request_id, Status.Value("PENDING"))
    approve(a, request_id, "A1")
    b.wait_status(request_id, Status.Value("DATA_RECEIVED"))
    import_records(b, request_id)
    assert b.record_rows("B1") == a.record_rows("A1")


def test_delivery_past_the_horizon_fails_at_the_prior_district_and_retry_delivers(
    cluster: Cluster,
) -> None:
    a = cluster.district(PRIOR, PRIOR_SCHOOL, retry_horizon_seconds=3.0)
    b = cluster.district(NEW, NEW_SCHOOL)
    seed_student(a, "A1", ssid=SSID, records=small_records(5))
    a.start()
    b.start()
    add_new_student(b, "B1", SSID)
    request_id = create_request(b, "B1", PRIOR_SCHOOL)
    a.wait_status(request_id, Status.Value("PENDING"))
    assert b.terminate() == 0  # B goes away for longer than A's horizon

    approve(a, request_id, "A1")
    a.wait_status(request_id, Status.Value("FAILED"), timeout=30)
    listed = {r["request_id"]: r for r in rt_json(a, "requests", "--direction", "in")}
    assert listed[request_id]["status"] == "FAILED"
    assert f"to district {NEW}" in listed[request_id]["status_reason"]
    assert "gave up after" in listed[request_id]["status_reason"]
    failed = a.rows(select(OUTBOX.c.kind, OUTBOX.c.status).where(OUTBOX.c.request_id == request_id))
    assert sorted(failed) == [("decision", "FAILED"), ("delivery", "FAILED")]

    b.start()
    retry_until(a, request_id, Status.Value("SENT"))
    b.wait_status(request_id, Status.Value("DATA_RECEIVED"))
    import_records(b, request_id)
    assert b.record_rows("B1") == a.record_rows("A1")
    a.wait_status(request_id, Status.Value("COMPLETE"))


# How long the directory entries of the registry test stay valid.
ENTRY_LIFETIME = timedelta(seconds=10)


def test_registry_down_cached_entries_keep_transfers_going_until_they_expire(
    cluster: Cluster,
) -> None:
    # Entries valid for only ENTRY_LIFETIME from now: the registry's clock is set
    # so that its 7-day entries end then (nothing else in them changes).
    registry = cluster.registry
    expires = utc_now() + ENTRY_LIFETIME
    registry.clock.set(expires - timedelta(days=7))
    # A 1-second cache: every lookup after it goes to the registry (or, while it
    # is down, falls back to the cached entry).
    a = cluster.district(PRIOR, PRIOR_SCHOOL, directory_ttl_seconds=1)
    b = cluster.district(NEW, NEW_SCHOOL, directory_ttl_seconds=1)
    seed_student(a, "A1", ssid=SSID, records=small_records(3))
    seed_student(a, "A2", ssid="2234567890", records=small_records(4))
    a.start(wait=False)
    b.start()
    a.wait_ready()
    add_new_student(b, "B1", SSID)
    add_new_student(b, "B2", "2234567890")
    add_new_student(b, "B3", "3234567890")

    # One transfer with the registry up: both sides cache each other's entries.
    first = create_request(b, "B1", PRIOR_SCHOOL)
    a.wait_status(first, Status.Value("PENDING"))
    approve(a, first, "A1")
    b.wait_status(first, Status.Value("DATA_RECEIVED"))

    registry.stop()
    stopped = time.monotonic()
    wait_for("the 1-second caches to go stale", lambda: time.monotonic() > stopped + 1.5)

    # With the registry down, a whole new transfer goes through on cached entries.
    second = create_request(b, "B2", PRIOR_SCHOOL)
    a.wait_status(second, Status.Value("PENDING"))
    approve(a, second, "A2")
    b.wait_status(second, Status.Value("DATA_RECEIVED"))
    import_records(b, second)
    a.wait_status(second, Status.Value("COMPLETE"))
    assert b.record_rows("B2") == a.record_rows("A2")
    assert utc_now() < expires, "the test ran too slowly to show the cached entries at work"
    assert "registry unreachable; using cached entry of district 1964733" in b.log()
    assert "registry unreachable; using cached entry of district 3768338" in a.log()

    # Expired (and the registry still down): a new transfer is refused, clearly.
    wait_for("the cached entries to expire", lambda: utc_now() > expires, timeout=30)
    before = b.scalar(select(func.count()).select_from(REQUESTS))
    refused = rt(b, "request", "create", "--student", "B3", "--prior-school", PRIOR_SCHOOL)
    assert refused.returncode == 1
    message = " ".join(refused.stderr.split())
    assert "registry cannot be reached" in message, refused.stderr
    assert f"no valid entry of district {PRIOR}" in message, refused.stderr
    assert b.scalar(select(func.count()).select_from(REQUESTS)) == before
