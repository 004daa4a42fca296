"""Requests (``rt_server.store.requests``): recorded once, queued and audited in one transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine

from protos.rt.v1 import peer_pb2
from rt_client.errors import Duplicate, InvalidInput, NotFound
from rt_server.core.statuses import Direction, Status
from rt_server.store import request_status, requests, thread_messages
from tests.unit.district._store_rows import audit_rows, outbox_rows

RequestFactory = Callable[..., peer_pb2.RecordsRequest]
Snap = Callable[[], Any]


def test_outbound_request_is_queued_audited_and_in_the_outbox(
    engine: Engine, student_id: str, records_request: RequestFactory, now: dt.datetime
) -> None:
    request = records_request()
    record = requests.record_outbound_request(
        engine,
        request,
        b"signed-request",
        local_student_id=student_id,
        actor="registrar.b",
        now=now,
    )
    assert (record.direction, record.status) == (Direction.OUTBOUND, Status.QUEUED)
    assert record.other_district == "0161192" and record.local_student_id == student_id
    assert record.tables_requested == ("TST", "HIS") and record.approved is None
    assert record.student.legal_last_name == "Nuñez"
    assert record.student.birth_date == dt.date(2010, 5, 17)
    assert record.request_envelope == b"signed-request"
    assert record.created_at == now - dt.timedelta(minutes=1) and record.updated_at == now
    assert record.expires_at == now + dt.timedelta(days=30)
    assert outbox_rows(engine) == [("request", "0161192", b"signed-request", "QUEUED")]
    assert audit_rows(engine)[-1]["action"] == "request.create"
    (message,) = thread_messages.list_messages(engine, request.request_id)
    assert message.system and message.author == "system" and message.from_district is None
    assert "queued for district 0161192" in message.body
    assert requests.get_request(engine, request.request_id) == record


def test_all_tables_when_none_named(
    engine: Engine, student_id: str, records_request: RequestFactory
) -> None:
    record = requests.record_outbound_request(
        engine, records_request(tables=[]), b"e", local_student_id=student_id, actor="r"
    )
    assert record.tables_requested == ("TST", "CST", "CTS", "HIS", "ENR", "IMM", "LAC", "PFT")


def test_inbound_request_is_pending_and_a_replay_is_refused(
    engine: Engine, records_request: RequestFactory, snapshot: Snap, now: dt.datetime
) -> None:
    request = records_request()
    record = requests.record_inbound_request(engine, request, b"signed", now=now)
    assert (record.direction, record.status) == (Direction.INBOUND, Status.PENDING)
    assert record.other_district == "1964733" and record.local_student_id is None
    assert record.requested_by == "registrar.b"
    assert outbox_rows(engine) == []  # the receipt goes back in the RPC's answer
    before = snapshot()
    for envelope in (b"signed", b"different"):
        with pytest.raises(Duplicate):
            requests.record_inbound_request(engine, request, envelope, now=now)
    assert snapshot() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"request_id": "not-a-uuid"}, "request id must be a lower-case UUID"),
        ({"request_id": str(uuid.uuid4()).upper()}, "lower-case UUID"),
        ({"requesting_district": "123"}, "not a district code"),
        ({"prior_district": "1964733", "prior_school": "19647331932334"}, "from itself"),
        ({"requesting_school": "01611920130229"}, "requesting school is not in the requesting"),
        ({"nonce": b"short"}, "nonce must be 16 bytes"),
        ({"tables": [42]}, "unknown record table"),
        ({"student": peer_pb2.StudentIdentity(legal_last_name="Nuñez")}, "by SSID, or by last"),
        (
            {"student": peer_pb2.StudentIdentity(ssid="1234567890", birth_date="2010-02-30")},
            "birth date: not a real calendar date",
        ),
        (
            {"student": peer_pb2.StudentIdentity(ssid="1234567890", legal_first_name="x" * 51)},
            "legal first name is longer than 50",
        ),
    ],
)
def test_malformed_inbound_requests_change_nothing(
    engine: Engine,
    records_request: RequestFactory,
    snapshot: Snap,
    now: dt.datetime,
    change: dict[str, Any],
    message: str,
) -> None:
    before = snapshot()
    with pytest.raises(InvalidInput, match=message):
        requests.record_inbound_request(engine, records_request(**change), b"e", now=now)
    assert snapshot() == before


def test_expired_inbound_request_is_refused(
    engine: Engine, records_request: RequestFactory, snapshot: Snap, now: dt.datetime
) -> None:
    before = snapshot()
    with pytest.raises(InvalidInput, match="expired"):
        requests.record_inbound_request(
            engine, records_request(), b"e", now=now + dt.timedelta(days=31)
        )
    assert snapshot() == before


def test_outbound_request_for_unknown_student(
    engine: Engine, records_request: RequestFactory, snapshot: Snap
) -> None:
    before = snapshot()
    with pytest.raises(NotFound):
        requests.record_outbound_request(
            engine, records_request(), b"e", local_student_id="S404", actor="r"
        )
    assert snapshot() == before


def test_list_requests_filters(engine: Engine, outbound: str, inbound: str) -> None:
    assert {r.request_id for r in requests.list_requests(engine)} == {outbound, inbound}
    assert [r.request_id for r in requests.list_requests(engine, "INBOUND")] == [inbound]
    assert [r.request_id for r in requests.list_requests(engine, None, "QUEUED")] == [outbound]
    assert requests.list_requests(engine, Direction.INBOUND, Status.QUEUED) == []
    assert len(requests.list_requests(engine, limit=1)) == 1
    with pytest.raises(InvalidInput):
        requests.list_requests(engine, "SIDEWAYS")
    with pytest.raises(NotFound):
        requests.get_request(engine, str(uuid.uuid4()))


def test_timestamps_are_aware_utc(engine: Engine, outbound: str) -> None:
    record = requests.get_request(engine, outbound)
    for value in (record.created_at, record.updated_at, record.expires_at):
        assert value is not None and value.tzinfo is dt.UTC
    with pytest.raises(ValueError, match="naive"):
        request_status.set_status(
            engine, outbound, "ACCEPT", actor="w", now=dt.datetime(2025, 1, 1)
        )


def test_received_counts(engine: Engine, outbound: str, now: dt.datetime) -> None:
    from rt_server.store.schema import TRANSFERS

    transfer_id = str(uuid.uuid4())
    assert requests.received_counts(engine, transfer_id) == ""
    with engine.begin() as conn:
        conn.execute(
            TRANSFERS.insert().values(
                transfer_id=transfer_id,
                request_id=outbound,
                direction="INBOUND",
                header=b"h",
                header_signature=b"s",
                wrapped_key=b"k",
                ciphertext_bytes=10,
                received_offset=0,
                state="RECEIVING",
                table_counts="TST=120,HIS=64",
                created_at=now,
            )
        )
    assert requests.received_counts(engine, transfer_id) == "TST=120,HIS=64"
