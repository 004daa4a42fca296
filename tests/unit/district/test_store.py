"""The store: each operation one transaction, audited, and refusals change nothing."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select

from protos.rt.v1 import common_pb2, peer_pb2, records_pb2
from rt_client.errors import Duplicate, InvalidInput, NotFound, WrongStatus
from rt_server.core.statuses import Action, Direction, Status
from rt_server.store import store
from rt_server.store.schema import AUDIT_LOG, OUTBOX, REQUESTS, STUDENTS, THREAD_MESSAGES

RequestFactory = Callable[..., peer_pb2.RecordsRequest]
Snap = Callable[[], Any]


def _outbox(engine: Engine) -> list[tuple[str, str, bytes, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(OUTBOX.c.kind, OUTBOX.c.to_district, OUTBOX.c.payload, OUTBOX.c.status).order_by(
                OUTBOX.c.id
            )
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _audit(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(r) for r in conn.execute(select(AUDIT_LOG).order_by(AUDIT_LOG.c.id)).mappings()
        ]


# --- students ---------------------------------------------------------------------------


def test_add_student_with_generated_id_and_records(engine: Engine, now: dt.datetime) -> None:
    batch = records_pb2.RecordBatch(table=common_pb2.IMM)
    batch.imm.extend(
        [
            records_pb2.ImmRow(sq=9, vc="03", dt="2011-05-01", src="SIS"),
            records_pb2.ImmRow(sq=4, vc="21"),
        ]
    )
    local_id = store.add_student(
        engine,
        {
            "local_id": "",
            "ssid": "",
            "legal_first_name": "  Zoë ",
            "legal_middle_name": "",
            "legal_last_name": "O'Brien",
            "birth_date": dt.date(2012, 2, 29),
            "gender": "x",
            "school": "",
        },
        [batch],
        actor="registrar.a",
        now=now,
    )
    assert re.fullmatch(r"S[0-9]{9}", local_id)
    student = store.get_student(engine, local_id)
    assert (student.legal_first_name, student.legal_middle_name, student.gender) == (
        "Zoë",
        None,
        "X",
    )
    assert student.ssid is None and student.school is None and student.created_at == now
    assert student.display_name == "O'Brien, Zoë"
    from rt_server.store.export import iter_batches

    (out,) = iter_batches(engine, local_id, ["IMM"])
    assert [(m.sq, m.vc, m.src) for m in out.imm] == [(1, "03", "SIS"), (2, "21", "")]
    assert not out.imm[1].HasField("src")
    (entry,) = _audit(engine)
    assert (entry["action"], entry["student_local_id"], entry["detail"]) == (
        "student.add",
        local_id,
        "records: IMM=2",
    )


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"local_id": "S000001"}, Duplicate, "local id is already enrolled"),
        (
            {"local_id": "S-NEW", "ssid": "1234567890"},
            Duplicate,
            r"SSID is already enrolled \(S000001\)",
        ),
        ({"local_id": "bad id!"}, InvalidInput, "local id may hold only"),
        ({"legal_last_name": " "}, InvalidInput, "legal last name is required"),
        ({"legal_first_name": "x" * 51}, InvalidInput, "longer than 50"),
        ({"birth_date": "2010-02-30"}, InvalidInput, "birth date: not a real calendar date"),
        ({"birth_date": "2999-01-01"}, InvalidInput, "not plausible"),
        ({"gender": "Q"}, InvalidInput, "gender must be"),
        ({"ssid": "12345"}, InvalidInput, "10-digit"),
        ({"school": "123"}, InvalidInput, "not a school code"),
        ({"legal_first_name": 5}, InvalidInput, "legal first name must be text"),
        ({"ssid": 1234567891}, InvalidInput, "10-digit"),
        ({"birth_date": 20100101}, InvalidInput, "birth date must be a date"),
    ],
)
def test_add_student_refusals_change_nothing(
    engine: Engine,
    student_id: str,
    snapshot: Snap,
    change: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    student = {
        "local_id": "S000002",
        "legal_first_name": "Ana",
        "legal_last_name": "Peña",
        "birth_date": "2011-01-01",
        **change,
    }
    before = snapshot()
    with pytest.raises(error, match=message):
        store.add_student(engine, student, actor="registrar.a")
    assert snapshot() == before


def test_add_student_with_a_bad_record_changes_nothing(engine: Engine, snapshot: Snap) -> None:
    good = records_pb2.RecordBatch(table=common_pb2.IMM, imm=[records_pb2.ImmRow(vc="03")] * 3)
    bad = records_pb2.RecordBatch(table=common_pb2.IMM, imm=[records_pb2.ImmRow(dt="2025-02-30")])
    before = snapshot()
    with pytest.raises(InvalidInput, match="IMM row 3, column DT"):  # counted across batches
        store.add_student(
            engine,
            {"legal_first_name": "A", "legal_last_name": "B", "birth_date": "2011-01-01"},
            [good, bad],
            actor="r",
        )
    assert snapshot() == before


def test_list_students(engine: Engine, student_id: str) -> None:
    other = store.add_student(
        engine,
        {
            "local_id": "S000002",
            "legal_first_name": "Nuno",
            "legal_last_name": "Silva",
            "birth_date": "2011-01-01",
        },
        actor="r",
    )
    assert [s.local_id for s in store.list_students(engine)] == [student_id, other]
    assert [s.local_id for s in store.list_students(engine, "NÚÑE")] == [student_id]
    assert [s.local_id for s in store.list_students(engine, "nu")] == [student_id, other]
    assert [s.local_id for s in store.list_students(engine, "1234567890")] == [student_id]
    assert [s.local_id for s in store.list_students(engine, "S000002")] == [other]
    assert [s.local_id for s in store.list_students(engine, "%")] == []
    assert len(store.list_students(engine, "", limit=1)) == 1
    with pytest.raises(NotFound):
        store.get_student(engine, "S404")


# --- requests ---------------------------------------------------------------------------


def test_outbound_request_is_queued_audited_and_in_the_outbox(
    engine: Engine, student_id: str, records_request: RequestFactory, now: dt.datetime
) -> None:
    request = records_request()
    record = store.record_outbound_request(
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
    assert _outbox(engine) == [("request", "0161192", b"signed-request", "QUEUED")]
    assert _audit(engine)[-1]["action"] == "request.create"
    (message,) = store.list_messages(engine, request.request_id)
    assert message.system and message.author == "system" and message.from_district is None
    assert "queued for district 0161192" in message.body
    assert store.get_request(engine, request.request_id) == record


def test_all_tables_when_none_named(
    engine: Engine, student_id: str, records_request: RequestFactory
) -> None:
    record = store.record_outbound_request(
        engine, records_request(tables=[]), b"e", local_student_id=student_id, actor="r"
    )
    assert record.tables_requested == ("TST", "CST", "CTS", "HIS", "ENR", "IMM", "LAC", "PFT")


def test_inbound_request_is_pending_and_a_replay_is_refused(
    engine: Engine, records_request: RequestFactory, snapshot: Snap, now: dt.datetime
) -> None:
    request = records_request()
    record = store.record_inbound_request(engine, request, b"signed", now=now)
    assert (record.direction, record.status) == (Direction.INBOUND, Status.PENDING)
    assert record.other_district == "1964733" and record.local_student_id is None
    assert record.requested_by == "registrar.b"
    assert _outbox(engine) == []  # the receipt goes back in the RPC's answer
    before = snapshot()
    for envelope in (b"signed", b"different"):
        with pytest.raises(Duplicate):
            store.record_inbound_request(engine, request, envelope, now=now)
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
        store.record_inbound_request(engine, records_request(**change), b"e", now=now)
    assert snapshot() == before


def test_expired_inbound_request_is_refused(
    engine: Engine, records_request: RequestFactory, snapshot: Snap, now: dt.datetime
) -> None:
    before = snapshot()
    with pytest.raises(InvalidInput, match="expired"):
        store.record_inbound_request(
            engine, records_request(), b"e", now=now + dt.timedelta(days=31)
        )
    assert snapshot() == before


def test_outbound_request_for_unknown_student(
    engine: Engine, records_request: RequestFactory, snapshot: Snap
) -> None:
    before = snapshot()
    with pytest.raises(NotFound):
        store.record_outbound_request(
            engine, records_request(), b"e", local_student_id="S404", actor="r"
        )
    assert snapshot() == before


# --- statuses ---------------------------------------------------------------------------


@pytest.fixture
def outbound(
    engine: Engine, student_id: str, records_request: RequestFactory, now: dt.datetime
) -> str:
    request = records_request()
    store.record_outbound_request(
        engine,
        request,
        b"signed-request",
        local_student_id=student_id,
        actor="registrar.b",
        now=now,
    )
    return request.request_id


@pytest.fixture
def inbound(engine: Engine, records_request: RequestFactory, now: dt.datetime) -> str:
    request = records_request()
    store.record_inbound_request(engine, request, b"signed-request", now=now)
    return request.request_id


def test_outbound_happy_path(engine: Engine, outbound: str, now: dt.datetime) -> None:
    later = now + dt.timedelta(hours=1)
    assert (
        store.set_status(engine, outbound, "ACCEPT", actor="worker", now=later).status == "PENDING"
    )
    decision_id = str(uuid.uuid4())
    transfer_id = str(uuid.uuid4())
    record = store.record_decision(
        engine,
        outbound,
        approved=True,
        actor="district 0161192",
        tables=[common_pb2.HIS],
        transfer_id=transfer_id,
        decision_id=decision_id,
        decision_envelope=b"signed-decision",
        decided_by="registrar.a",
        decided_at=later,
        now=later,
    )
    assert (record.status, record.approved, record.tables_approved) == ("PENDING", True, ("HIS",))
    assert (record.transfer_id, record.decided_by, record.decided_at) == (
        transfer_id,
        "registrar.a",
        later,
    )
    assert record.decision_envelope == b"signed-decision"
    assert store.set_status(engine, outbound, Action.RECEIVE_DATA, actor="peer").status == (
        "DATA_RECEIVED"
    )
    assert store.set_status(engine, outbound, Action.IMPORT, actor="registrar.b").status == (
        "IMPORTED"
    )
    bodies = [m.body for m in store.list_messages(engine, outbound)]
    assert bodies[1:] == [
        "Status QUEUED -> PENDING (worker).",
        "Approved by registrar.a for tables HIS. Records to follow.",
        "Status PENDING -> DATA_RECEIVED (peer).",
        "Status DATA_RECEIVED -> IMPORTED (registrar.b).",
    ]
    assert [a["action"] for a in _audit(engine)][-5:] == [
        "request.create",
        "request.accept",
        "request.approve",
        "request.receive_data",
        "request.import",
    ]
    # a re-sent decision is recognised and changes nothing
    with pytest.raises(Duplicate):
        store.record_decision(
            engine,
            outbound,
            approved=False,
            actor="x",
            reason="OTHER",
            text="t",
            decision_id=decision_id,
        )


def test_wrong_status_changes_nothing(engine: Engine, outbound: str, snapshot: Snap) -> None:
    before = snapshot()
    with pytest.raises(WrongStatus, match="request is QUEUED; only DATA_RECEIVED requests"):
        store.set_status(engine, outbound, "IMPORT", actor="registrar.b")
    with pytest.raises(InvalidInput, match="record_decision"):
        store.set_status(engine, outbound, "REJECT", actor="registrar.b")
    with pytest.raises(InvalidInput, match="unknown request action"):
        store.set_status(engine, outbound, "EXPLODE", actor="registrar.b")
    with pytest.raises(InvalidInput, match="actor"):
        store.set_status(engine, outbound, "ACCEPT", actor=" ")
    with pytest.raises(NotFound):
        store.set_status(engine, str(uuid.uuid4()), "ACCEPT", actor="registrar.b")
    assert snapshot() == before


def test_fail_keeps_the_reason_and_retry_requeues_the_outbox(
    engine: Engine, outbound: str, now: dt.datetime
) -> None:
    with engine.begin() as conn:  # the worker gave up on the request item
        conn.execute(OUTBOX.update().values(status="FAILED", attempts=9, last_error="refused"))
    failed = store.set_status(engine, outbound, "FAIL", actor="worker", reason="peer refused")
    assert (failed.status, failed.status_reason) == ("FAILED", "peer refused")
    assert store.list_messages(engine, outbound)[-1].body.endswith("Reason: peer refused")
    later = now + dt.timedelta(days=1)
    retried = store.set_status(engine, outbound, "RETRY", actor="registrar.b", now=later)
    assert (retried.status, retried.status_reason) == ("QUEUED", None)
    with engine.connect() as conn:
        item = conn.execute(select(OUTBOX)).mappings().one()
    assert (item["status"], item["attempts"], item["last_error"]) == ("QUEUED", 0, None)
    assert item["next_attempt_at"] == later


def test_inbound_approval_queues_decision_and_delivery(
    engine: Engine, inbound: str, student_id: str
) -> None:
    transfer_id = str(uuid.uuid4())
    record = store.record_decision(
        engine,
        inbound,
        approved=True,
        actor="registrar.a",
        transfer_id=transfer_id,
        local_student_id=student_id,
        decision_envelope=b"signed-decision",
        decision_id=str(uuid.uuid4()),
    )
    assert (record.status, record.approved, record.local_student_id) == (
        "PENDING",
        True,
        student_id,
    )
    assert record.tables_approved == ("TST", "HIS") and record.decided_by == "registrar.a"
    assert record.decision_id is not None
    assert _outbox(engine) == [
        ("decision", "1964733", b"signed-decision", "QUEUED"),
        ("delivery", "1964733", transfer_id.encode(), "QUEUED"),
    ]
    with pytest.raises(WrongStatus, match="already approved"):
        store.record_decision(
            engine,
            inbound,
            approved=False,
            actor="registrar.a",
            reason="OTHER",
            text="x",
            decision_envelope=b"d",
            decision_id=str(uuid.uuid4()),
        )
    sent = store.set_status(engine, inbound, "SEND", actor="worker")
    assert sent.status == "SENT"
    assert store.set_status(engine, inbound, "COMPLETE", actor="peer").status == "COMPLETE"


def test_inbound_rejection(engine: Engine, inbound: str) -> None:
    record = store.record_decision(
        engine,
        inbound,
        approved=False,
        actor="registrar.a",
        reason=common_pb2.STUDENT_NOT_FOUND,
        decision_envelope=b"signed-decision",
        decision_id=str(uuid.uuid4()),
    )
    assert (record.status, record.approved, record.reject_reason) == (
        "REJECTED",
        False,
        "STUDENT_NOT_FOUND",
    )
    assert _outbox(engine) == [("decision", "1964733", b"signed-decision", "QUEUED")]
    assert store.list_messages(engine, inbound)[-1].body == (
        "Rejected by registrar.a: STUDENT_NOT_FOUND."
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"approved": False, "reason": "OTHER"}, InvalidInput, "needs an explanation"),
        ({"approved": False}, InvalidInput, "needs a reason code"),
        ({"approved": False, "reason": "REJECT_REASON_UNSPECIFIED"}, InvalidInput, "reason code"),
        ({"approved": False, "reason": "BORED"}, InvalidInput, "reason code"),
        (
            {"approved": False, "reason": "OTHER", "text": "t", "decision_id": None},
            InvalidInput,
            "decision id must be",
        ),
        (
            {"approved": True, "transfer_id": "T", "local_student_id": "S000001"},
            InvalidInput,
            "transfer id must be",
        ),
        ({"approved": True, "local_student_id": "S000001"}, InvalidInput, "needs the transfer id"),
        ({"approved": True, "transfer_id": str(uuid.uuid4())}, InvalidInput, "confirm which"),
        (
            {"approved": True, "transfer_id": str(uuid.uuid4()), "local_student_id": "S404"},
            NotFound,
            "no student",
        ),
        (
            {
                "approved": True,
                "transfer_id": str(uuid.uuid4()),
                "local_student_id": "S000001",
                "tables": ["IMM"],
            },
            InvalidInput,
            "not requested: IMM",
        ),
        (
            {
                "approved": True,
                "transfer_id": str(uuid.uuid4()),
                "local_student_id": "S000001",
                "decision_envelope": None,
            },
            InvalidInput,
            "must be signed",
        ),
    ],
)
def test_bad_decisions_change_nothing(
    engine: Engine,
    inbound: str,
    student_id: str,
    snapshot: Snap,
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    before = snapshot()
    with pytest.raises(error, match=message):
        store.record_decision(
            engine,
            inbound,
            actor="registrar.a",
            **{"decision_envelope": b"signed-decision", "decision_id": str(uuid.uuid4()), **kwargs},
        )
    assert snapshot() == before


def test_outbound_approval_of_tables_not_requested_is_refused(
    engine: Engine, outbound: str, snapshot: Snap
) -> None:
    before = snapshot()
    with pytest.raises(InvalidInput, match="not requested: IMM"):
        store.record_decision(
            engine,
            outbound,
            approved=True,
            actor="district 0161192",
            tables=["HIS", "IMM"],
            transfer_id=str(uuid.uuid4()),
            decision_id=str(uuid.uuid4()),
        )
    assert snapshot() == before


def test_decision_on_a_decided_outbound_request(engine: Engine, outbound: str) -> None:
    store.record_decision(
        engine,
        outbound,
        approved=False,
        actor="district 0161192",
        reason="RECORDS_WITHHELD",
        decision_id=str(uuid.uuid4()),
    )
    with pytest.raises(WrongStatus, match="request is REJECTED"):
        store.record_decision(
            engine,
            outbound,
            approved=True,
            actor="district 0161192",
            transfer_id=str(uuid.uuid4()),
            decision_id=str(uuid.uuid4()),
        )


def test_list_requests_filters(engine: Engine, outbound: str, inbound: str) -> None:
    assert {r.request_id for r in store.list_requests(engine)} == {outbound, inbound}
    assert [r.request_id for r in store.list_requests(engine, "INBOUND")] == [inbound]
    assert [r.request_id for r in store.list_requests(engine, None, "QUEUED")] == [outbound]
    assert store.list_requests(engine, Direction.INBOUND, Status.QUEUED) == []
    assert len(store.list_requests(engine, limit=1)) == 1
    with pytest.raises(InvalidInput):
        store.list_requests(engine, "SIDEWAYS")
    with pytest.raises(NotFound):
        store.get_request(engine, str(uuid.uuid4()))


def test_several_calls_compose_into_one_transaction(
    engine: Engine, inbound: str, student_id: str, snapshot: Snap
) -> None:
    store.record_decision(
        engine,
        inbound,
        approved=True,
        actor="registrar.a",
        transfer_id=str(uuid.uuid4()),
        local_student_id=student_id,
        decision_envelope=b"d",
        decision_id=str(uuid.uuid4()),
    )
    before = snapshot()
    with pytest.raises(InvalidInput), engine.begin() as conn:
        store.set_status(conn, inbound, "SEND", actor="worker")
        store.write_disclosure(
            conn,
            student_local_id=student_id,
            receiving_district="1964733",
            receiving_school="19647331932334",
            tables=[],  # refused
            request_id=inbound,
            acting_staff="registrar.a",
        )
    assert snapshot() == before  # the status change went with it
    with engine.begin() as conn:
        store.set_status(conn, inbound, "SEND", actor="worker")
        store.write_disclosure(
            conn,
            student_local_id=student_id,
            receiving_district="1964733",
            receiving_school="19647331932334",
            tables=["HIS", "TST"],
            request_id=inbound,
            acting_staff="registrar.a",
        )
    assert store.get_request(engine, inbound).status == "SENT"
    assert len(store.list_disclosures(engine, student_id)) == 1


# --- disclosures ------------------------------------------------------------------------


def test_disclosures(engine: Engine, student_id: str, inbound: str, now: dt.datetime) -> None:
    entry = store.write_disclosure(
        engine,
        student_local_id=student_id,
        receiving_district="1964733",
        receiving_school="19647331932334",
        tables=[common_pb2.HIS, common_pb2.TST],
        request_id=inbound,
        acting_staff="registrar.a",
        now=now,
    )
    assert entry.student_name == "Nuñez, María José"
    assert entry.tables == ("TST", "HIS") and entry.disclosed_at == now
    assert entry.legal_basis.startswith("34 CFR 99.31(a)(2)")
    assert store.list_disclosures(engine, student_id) == [entry]
    assert store.list_disclosures(engine) == [entry]
    assert store.list_disclosures(engine, "S404") == []
    with pytest.raises(NotFound):
        store.write_disclosure(
            engine,
            student_local_id="S404",
            receiving_district="1964733",
            receiving_school="19647331932334",
            tables=["HIS"],
            request_id=inbound,
            acting_staff="registrar.a",
        )


# --- thread -----------------------------------------------------------------------------


def test_thread_messages(engine: Engine, outbound: str, snapshot: Snap, now: dt.datetime) -> None:
    message_id = str(uuid.uuid4())
    ours = store.add_thread_message(
        engine,
        outbound,
        author="registrar.b",
        body="Could you include 2019 immunizations?",
        from_district="1964733",
        message_id=message_id,
        sent_at=now,
        envelope=b"signed-msg",
    )
    assert (ours.delivered, ours.system, ours.from_district) == (False, False, "1964733")
    assert _outbox(engine)[-1] == ("message", "0161192", b"signed-msg", "QUEUED")
    store.mark_message_delivered(engine, message_id)
    theirs = store.add_thread_message(
        engine,
        outbound,
        author="registrar.a",
        body="Sí, claro.",
        from_district="0161192",
        delivered=True,
    )
    thread = store.list_messages(engine, outbound)
    assert [m.body for m in thread[-2:]] == ["Could you include 2019 immunizations?", "Sí, claro."]
    assert thread[-2].delivered and thread[-1] == theirs
    before = snapshot()
    with pytest.raises(Duplicate):
        store.add_thread_message(
            engine,
            outbound,
            author="x",
            body="again",
            from_district="1964733",
            message_id=message_id,
        )
    for bad in ({"body": " "}, {"body": "x" * 4001}, {"from_district": "12"}):
        with pytest.raises(InvalidInput):
            store.add_thread_message(
                engine, outbound, **{"author": "x", "body": "hi", "from_district": "1964733", **bad}
            )
    with pytest.raises(NotFound):
        store.add_thread_message(
            engine, str(uuid.uuid4()), author="x", body="hi", from_district="1964733"
        )
    assert snapshot() == before
    with pytest.raises(NotFound):
        store.list_messages(engine, str(uuid.uuid4()))


def test_remember_message(engine: Engine) -> None:
    store.remember_message(engine, "receipt-1", "receipt")
    with pytest.raises(Duplicate):
        store.remember_message(engine, "receipt-1", "receipt")


# --- hygiene ----------------------------------------------------------------------------


def test_audit_log_holds_no_student_data(
    engine: Engine, outbound: str, inbound: str, student_id: str
) -> None:
    store.record_decision(
        engine,
        inbound,
        approved=False,
        actor="registrar.a",
        reason="OTHER",
        text="María Nuñez moved to Fresno",
        decision_envelope=b"d",
        decision_id=str(uuid.uuid4()),
    )
    store.write_disclosure(
        engine,
        student_local_id=student_id,
        receiving_district="1964733",
        receiving_school="19647331932334",
        tables=["HIS"],
        request_id=outbound,
        acting_staff="registrar.a",
    )
    store.add_thread_message(
        engine,
        outbound,
        author="registrar.b",
        body="About María Nuñez",
        from_district="1964733",
        envelope=b"m",
    )
    with engine.connect() as conn:
        text = " ".join(str(v) for r in conn.execute(select(AUDIT_LOG)) for v in r)
        student = conn.execute(select(STUDENTS)).mappings().one()
    for secret in ("María", "Maria", "Nuñez", "José", "1234567890", "2010-05-17", "Fresno"):
        assert secret not in text
    assert student["last_name_key"] == "nunez"
    with engine.connect() as conn:
        assert (
            conn.execute(
                select(REQUESTS.c.reject_text).where(REQUESTS.c.request_id == inbound)
            ).scalar()
            == "María Nuñez moved to Fresno"
        )
        assert conn.execute(
            select(THREAD_MESSAGES.c.body).where(THREAD_MESSAGES.c.system.is_(True))
        ).all()


def test_timestamps_are_aware_utc(engine: Engine, outbound: str) -> None:
    record = store.get_request(engine, outbound)
    for value in (record.created_at, record.updated_at, record.expires_at):
        assert value is not None and value.tzinfo is dt.UTC
    with pytest.raises(ValueError, match="naive"):
        store.set_status(engine, outbound, "ACCEPT", actor="w", now=dt.datetime(2025, 1, 1))


def test_received_counts(engine: Engine, outbound: str, now: dt.datetime) -> None:
    from rt_server.store.schema import TRANSFERS

    transfer_id = str(uuid.uuid4())
    assert store.received_counts(engine, transfer_id) == ""
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
    assert store.received_counts(engine, transfer_id) == "TST=120,HIS=64"
