"""Status changes (``rt_server.store.request_status``): guarded, audited, told in the thread."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select

from protos.rt.v1 import common_pb2
from rt_client.errors import Duplicate, InvalidInput, NotFound, WrongStatus
from rt_server.core.statuses import Action
from rt_server.store import decisions, disclosures, request_status, requests, thread_messages
from rt_server.store.decisions import Decision
from rt_server.store.schema import OUTBOX
from tests.unit.district._store_rows import audit_rows, decide

Snap = Callable[[], Any]


def test_outbound_happy_path(engine: Engine, outbound: str, now: dt.datetime) -> None:
    later = now + dt.timedelta(hours=1)
    assert (
        request_status.set_status(engine, outbound, "ACCEPT", actor="worker", now=later).status
        == "PENDING"
    )
    decision_id = str(uuid.uuid4())
    transfer_id = str(uuid.uuid4())
    record = decisions.record_decision(
        engine,
        Decision(
            request_id=outbound,
            decision_id=decision_id,
            approved=True,
            actor="district 0161192",
            envelope=b"signed-decision",
            tables=[common_pb2.HIS],
            transfer_id=transfer_id,
            decided_by="registrar.a",
            decided_at=later,
        ),
        now=later,
    )
    assert (record.status, record.approved, record.tables_approved) == ("PENDING", True, ("HIS",))
    assert (record.transfer_id, record.decided_by, record.decided_at) == (
        transfer_id,
        "registrar.a",
        later,
    )
    assert record.decision_envelope == b"signed-decision"
    assert request_status.set_status(
        engine, outbound, Action.RECEIVE_DATA, actor="peer"
    ).status == ("DATA_RECEIVED")
    assert request_status.set_status(
        engine, outbound, Action.IMPORT, actor="registrar.b"
    ).status == ("IMPORTED")
    bodies = [m.body for m in thread_messages.list_messages(engine, outbound)]
    assert bodies[1:] == [
        "Status QUEUED -> PENDING (worker).",
        "Approved by registrar.a for tables HIS. Records to follow.",
        "Status PENDING -> DATA_RECEIVED (peer).",
        "Status DATA_RECEIVED -> IMPORTED (registrar.b).",
    ]
    assert [a["action"] for a in audit_rows(engine)][-5:] == [
        "request.create",
        "request.accept",
        "request.approve",
        "request.receive_data",
        "request.import",
    ]
    # a re-sent decision is recognised and changes nothing
    with pytest.raises(Duplicate):
        decisions.record_decision(
            engine,
            Decision(
                request_id=outbound,
                decision_id=decision_id,
                approved=False,
                actor="x",
                reason="OTHER",
                reason_text="t",
            ),
        )


def test_wrong_status_changes_nothing(engine: Engine, outbound: str, snapshot: Snap) -> None:
    before = snapshot()
    with pytest.raises(WrongStatus, match="request is QUEUED; only DATA_RECEIVED requests"):
        request_status.set_status(engine, outbound, "IMPORT", actor="registrar.b")
    with pytest.raises(InvalidInput, match="record_decision"):
        request_status.set_status(engine, outbound, "REJECT", actor="registrar.b")
    with pytest.raises(InvalidInput, match="unknown request action"):
        request_status.set_status(engine, outbound, "EXPLODE", actor="registrar.b")
    with pytest.raises(InvalidInput, match="actor"):
        request_status.set_status(engine, outbound, "ACCEPT", actor=" ")
    with pytest.raises(NotFound):
        request_status.set_status(engine, str(uuid.uuid4()), "ACCEPT", actor="registrar.b")
    assert snapshot() == before


def test_fail_keeps_the_reason_and_retry_requeues_the_outbox(
    engine: Engine, outbound: str, now: dt.datetime
) -> None:
    with engine.begin() as conn:  # the worker gave up on the request item
        conn.execute(OUTBOX.update().values(status="FAILED", attempts=9, last_error="refused"))
    failed = request_status.set_status(
        engine, outbound, "FAIL", actor="worker", reason="peer refused"
    )
    assert (failed.status, failed.status_reason) == ("FAILED", "peer refused")
    assert thread_messages.list_messages(engine, outbound)[-1].body.endswith("Reason: peer refused")
    later = now + dt.timedelta(days=1)
    retried = request_status.set_status(engine, outbound, "RETRY", actor="registrar.b", now=later)
    assert (retried.status, retried.status_reason) == ("QUEUED", None)
    with engine.connect() as conn:
        item = conn.execute(select(OUTBOX)).mappings().one()
    assert (item["status"], item["attempts"], item["last_error"]) == ("QUEUED", 0, None)
    assert item["next_attempt_at"] == later


def test_several_calls_compose_into_one_transaction(
    engine: Engine, inbound: str, student_id: str, snapshot: Snap
) -> None:
    decide(
        engine,
        inbound,
        approved=True,
        actor="registrar.a",
        envelope=b"d",
        transfer_id=str(uuid.uuid4()),
        local_student_id=student_id,
    )
    before = snapshot()
    with pytest.raises(InvalidInput), engine.begin() as conn:
        request_status.set_status(conn, inbound, "SEND", actor="worker")
        disclosures.write_disclosure(
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
        request_status.set_status(conn, inbound, "SEND", actor="worker")
        disclosures.write_disclosure(
            conn,
            student_local_id=student_id,
            receiving_district="1964733",
            receiving_school="19647331932334",
            tables=["HIS", "TST"],
            request_id=inbound,
            acting_staff="registrar.a",
        )
    assert requests.get_request(engine, inbound).status == "SENT"
    assert len(disclosures.list_disclosures(engine, student_id)) == 1
