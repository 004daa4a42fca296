"""Decisions (``rt_server.store.decisions``): recorded once, on either side.

A bad decision changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine

from protos.rt.v1 import common_pb2
from rt_client.errors import InvalidInput, NotFound, WrongStatus
from rt_server.store import decisions, request_status, thread_messages
from rt_server.store.decisions import Decision
from tests.unit.district._store_rows import decide, outbox_rows

Snap = Callable[[], Any]


def test_inbound_approval_queues_decision_and_delivery(
    engine: Engine, inbound: str, student_id: str
) -> None:
    transfer_id = str(uuid.uuid4())
    record = decide(
        engine,
        inbound,
        approved=True,
        actor="registrar.a",
        envelope=b"signed-decision",
        transfer_id=transfer_id,
        local_student_id=student_id,
    )
    assert (record.status, record.approved, record.local_student_id) == (
        "PENDING",
        True,
        student_id,
    )
    assert record.tables_approved == ("TST", "HIS") and record.decided_by == "registrar.a"
    assert record.decision_id is not None
    assert outbox_rows(engine) == [
        ("decision", "1964733", b"signed-decision", "QUEUED"),
        ("delivery", "1964733", transfer_id.encode(), "QUEUED"),
    ]
    with pytest.raises(WrongStatus, match="already approved"):
        decide(
            engine,
            inbound,
            approved=False,
            actor="registrar.a",
            envelope=b"d",
            reason="OTHER",
            reason_text="x",
        )
    sent = request_status.set_status(engine, inbound, "SEND", actor="worker")
    assert sent.status == "SENT"
    assert request_status.set_status(engine, inbound, "COMPLETE", actor="peer").status == "COMPLETE"


def test_inbound_rejection(engine: Engine, inbound: str) -> None:
    record = decide(
        engine,
        inbound,
        approved=False,
        actor="registrar.a",
        envelope=b"signed-decision",
        reason=common_pb2.STUDENT_NOT_FOUND,
    )
    assert (record.status, record.approved, record.reject_reason) == (
        "REJECTED",
        False,
        "STUDENT_NOT_FOUND",
    )
    assert outbox_rows(engine) == [("decision", "1964733", b"signed-decision", "QUEUED")]
    assert thread_messages.list_messages(engine, inbound)[-1].body == (
        "Rejected by registrar.a: student not found."
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"approved": False, "reason": "OTHER"}, InvalidInput, r"needs an explanation.*--text"),
        ({"approved": False}, InvalidInput, "needs a reason code"),
        ({"approved": False, "reason": "REJECT_REASON_UNSPECIFIED"}, InvalidInput, "reason code"),
        ({"approved": False, "reason": "BORED"}, InvalidInput, "reason code"),
        (
            {"approved": False, "reason": "OTHER", "reason_text": "t", "decision_id": None},
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
                "envelope": None,
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
        decisions.record_decision(
            engine,
            Decision(
                request_id=inbound,
                actor="registrar.a",
                **{"envelope": b"signed-decision", "decision_id": str(uuid.uuid4()), **kwargs},
            ),
        )
    assert snapshot() == before


def test_outbound_approval_of_tables_not_requested_is_refused(
    engine: Engine, outbound: str, snapshot: Snap
) -> None:
    before = snapshot()
    with pytest.raises(InvalidInput, match="not requested: IMM"):
        decide(
            engine,
            outbound,
            approved=True,
            actor="district 0161192",
            tables=["HIS", "IMM"],
            transfer_id=str(uuid.uuid4()),
        )
    assert snapshot() == before


def test_decision_on_a_decided_outbound_request(engine: Engine, outbound: str) -> None:
    decide(
        engine,
        outbound,
        approved=False,
        actor="district 0161192",
        reason="RECORDS_WITHHELD",
    )
    with pytest.raises(WrongStatus, match="request is REJECTED"):
        decide(
            engine,
            outbound,
            approved=True,
            actor="district 0161192",
            transfer_id=str(uuid.uuid4()),
        )
