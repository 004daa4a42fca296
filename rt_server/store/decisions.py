"""Decisions on records requests: the approval or rejection, on either side, recorded once.

INBOUND (we were asked): our registrar decides a PENDING, undecided request;
the signed ``peer_pb2.Decision`` is queued for the requesting district in the
same transaction, and for an approval the delivery of the records too.
OUTBOUND (we asked): the prior district's verified decision arrives; its id is
remembered so a re-sent one changes nothing (``Duplicate``).

Invariants (DESIGN.md sections 4 and 6): one transaction per decision; every
check runs before the first write that could stay, so a refusal changes
nothing; only requested tables can be approved; the audit row holds no student
data (the rejection text a registrar typed stays on the request, not in the
log); what must reach the other district is in ``outbox`` when the decision
commits, never before or after.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, update

from rt_client.errors import InvalidInput, NotFound, WrongStatus
from rt_client.ids import MessageId, RequestId, TransferId, parse_uuid
from rt_server.core.inputs import parse_actor, parse_reject_reason, parse_text
from rt_server.core.model import RequestRecord
from rt_server.core.statuses import Action, Direction, Status, transition
from rt_server.core.tables import TableRef, format_table_list, parse_table_list, table_set
from rt_server.store._db import Bind, aware, transaction
from rt_server.store._rows import load_request, request_from_row
from rt_server.store.audit import system_message, write_audit
from rt_server.store.flags import StudentFlag, set_flag
from rt_server.store.outbox_queue import OutboxClaim, enqueue
from rt_server.store.request_status import change_status
from rt_server.store.schema import REQUESTS, STAFF_LEN
from rt_server.store.seen_messages import remember_message
from rt_server.store.students import is_enrolled

__all__ = ["Decision", "record_decision"]

_REJECTION_TEXT_LEN = 1000


@dataclass(frozen=True)
class Decision:
    """An approval or rejection of one request, as the store is to record it.

    ``decision_id`` and ``envelope`` are those of the signed
    ``peer_pb2.Decision`` (``envelope`` is required for ours, which is queued
    for the requester; a peer's is kept as received). An approval names the
    ``transfer_id`` and the ``tables`` approved (empty: all requested) and, for
    ours, ``local_student_id``: the student the registrar confirmed. A
    rejection names ``reason`` (a ``RejectReason`` name or value) and, with
    OTHER, ``reason_text``. ``decided_by``/``decided_at`` default to ``actor``
    and the time of recording (a peer's decision carries its own).
    """

    request_id: RequestId
    decision_id: MessageId
    approved: bool
    actor: str
    envelope: bytes | None = None
    tables: Sequence[TableRef] = ()
    transfer_id: TransferId | None = None
    local_student_id: str | None = None
    reason: str | int | None = None
    reason_text: str | None = None
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    # EC 48201(b) "SENT" / "NONE_ON_FILE"; EC 48904.3 grades withheld.
    discipline_answer: str | None = None
    grades_withheld: bool = False


def record_decision(
    bind: Bind,
    decision: Decision,
    *,
    now: dt.datetime | None = None,
    claim: OutboxClaim | None = None,
) -> RequestRecord:
    """Record an approval or rejection of ``decision.request_id``, on either side.

    INBOUND (our registrar decides; the request must be PENDING and
    undecided): the envelope is queued as an outbox 'decision' to the
    requester (held by ``claim``'s worker, if given). An approval keeps the
    request PENDING and also queues an outbox 'delivery' (payload: the
    transfer id) for the delivery worker; a rejection makes it REJECTED.

    OUTBOUND (the prior district's verified ``Decision`` arrived): approval
    (QUEUED or PENDING -> PENDING) records tables and transfer id; an approval
    overtaken by its own records (DATA_RECEIVED or IMPORTED, same transfer id)
    is recorded and leaves the status as it is; rejection -> REJECTED.

    Raises ``NotFound`` (no such request, or student), ``WrongStatus``,
    ``InvalidInput`` (see ``Decision``), ``Duplicate`` (OUTBOUND: this
    decision id was processed before).
    """
    at = aware(now)
    who = parse_actor(decision.actor, STAFF_LEN)
    reason_text = parse_text(decision.reason_text, "rejection text", _REJECTION_TEXT_LEN)
    with transaction(bind) as conn:
        row = load_request(conn, decision.request_id, lock=True)
        side = Direction(row["direction"])
        columns: dict[str, Any] = {
            "approved": decision.approved,
            "decided_by": parse_text(decision.decided_by, "decided by", STAFF_LEN) or who,
            "decided_at": aware(decision.decided_at) if decision.decided_at is not None else at,
        }
        if side is Direction.INBOUND:
            _check_ours_can_be_recorded(row, decision)
        columns["decision_id"] = parse_uuid(decision.decision_id, "decision id")
        if side is Direction.OUTBOUND:
            # A re-sent decision stops here (Duplicate). Remembered in this
            # transaction, so a refusal below forgets it again.
            remember_message(conn, columns["decision_id"], "decision", now=at)
        columns["decision_envelope"] = decision.envelope
        if decision.approved:
            columns |= _approval_columns(conn, row, side, decision)
        else:
            columns |= _rejection_columns(decision, reason_text)
        _apply(conn, row, side, columns, actor=who, at=at)
        if side is Direction.OUTBOUND and decision.approved:
            _duties_that_arrive(conn, row, columns, actor=who, at=at)
        if side is Direction.INBOUND:
            _queue_for_requester(conn, row, columns, at=at, claim=claim)
        return request_from_row(load_request(conn, decision.request_id))


def _check_ours_can_be_recorded(row: RowMapping, decision: Decision) -> None:
    """An INBOUND decision: the request is undecided, in a status that allows it, and signed."""
    if row["approved"] is not None:
        verdict = "approved" if row["approved"] else "rejected"
        raise WrongStatus(f"request was already {verdict}")
    action = Action.APPROVE if decision.approved else Action.REJECT
    transition(row["status"], action, row["direction"])  # raises WrongStatus
    if decision.envelope is None:
        raise InvalidInput("a decision must be signed before it is recorded")


def _approval_columns(
    conn: Connection, row: RowMapping, side: Direction, decision: Decision
) -> dict[str, Any]:
    """The columns an approval writes: only requested tables; ours names a known student."""
    requested = parse_table_list(row["tables_requested"])
    chosen = table_set(decision.tables) or requested
    extra_tables = [t for t in chosen if t not in requested]
    if extra_tables:
        raise InvalidInput(
            "cannot approve tables that were not requested: " + ",".join(extra_tables)
        )
    if decision.transfer_id is None:
        raise InvalidInput("an approval needs the transfer id")
    columns = {
        "transfer_id": parse_uuid(decision.transfer_id, "transfer id"),
        "tables_approved": format_table_list(chosen),
        "discipline_answer": decision.discipline_answer,
        "grades_withheld": decision.grades_withheld,
    }
    if side is Direction.INBOUND:
        if not decision.local_student_id:
            raise InvalidInput("confirm which of our students the request is for")
        if not is_enrolled(conn, decision.local_student_id):
            raise NotFound("no student with this local id")
        columns["local_student_id"] = decision.local_student_id
        columns["held_reason"] = None  # a hold (EC 49068.6) lifted: the flag was cleared
    return columns


def _duties_that_arrive(
    conn: Connection, row: RowMapping, columns: dict[str, Any], *, actor: str, at: dt.datetime
) -> None:
    """What an approval brings the requester: the prior district's withholding of
    grades, kept here (EC 48904.3), and, when suspension/expulsion records come,
    the duty to inform the student's teachers (EC 48201(b), 49079)."""
    student = row["local_student_id"]
    if columns.get("grades_withheld") and student:
        set_flag(
            conn,
            student,
            StudentFlag.WITHHOLD_GRADES,
            on=True,
            source=f"district {row['other_district']}",
            actor=actor,
            now=at,
            request_id=row["request_id"],
        )
        system_message(
            conn,
            row["request_id"],
            "The prior district withholds this student's grades (EC 48904.3): "
            "the flag is set here and kept.",
            at,
        )
    if columns.get("discipline_answer") == "SENT":
        write_audit(
            conn,
            actor=actor,
            action="duty.inform_teachers",
            request_id=row["request_id"],
            student_local_id=student,
            detail="EC 48201(b): suspension/expulsion records sent; inform the teachers",
            now=at,
        )
        system_message(
            conn,
            row["request_id"],
            "Suspension/expulsion records are on their way (EC 48201(b)): inform the "
            "student's teachers (EC 49079).",
            at,
        )


def _rejection_columns(decision: Decision, reason_text: str | None) -> dict[str, Any]:
    """The columns a rejection writes: a reason code, and the text OTHER needs."""
    code = parse_reject_reason(decision.reason)
    if code == "OTHER" and reason_text is None:
        raise InvalidInput(
            "a rejection for another reason (OTHER) needs an explanation for the other "
            "registrar: the text ('rt reject --text')"
        )
    return {"reject_reason": code, "reject_text": reason_text}


def _thread_line(side: Direction, columns: dict[str, Any]) -> str:
    """The system message that tells the thread what was decided."""
    if columns["approved"]:
        return f"Approved by {columns['decided_by']} for tables {columns['tables_approved']}." + (
            " Records will be sent." if side is Direction.INBOUND else " Records to follow."
        )
    reject_text = columns["reject_text"]
    reason = str(columns["reject_reason"]).replace("_", " ").lower()  # "student not found"
    return f"Rejected by {columns['decided_by']}: {reason}" + (
        f" ({reject_text})." if reject_text else "."
    )


def _apply(
    conn: Connection,
    row: RowMapping,
    side: Direction,
    columns: dict[str, Any],
    *,
    actor: str,
    at: dt.datetime,
) -> None:
    """Write the decision on the request: a status change, or an approval that came late."""
    message = _thread_line(side, columns)
    approved = columns["approved"]
    if (
        side is Direction.OUTBOUND
        and approved
        and row["status"] in (Status.DATA_RECEIVED, Status.IMPORTED)
        and row["transfer_id"] == columns["transfer_id"]
    ):
        # The prior district sends the decision and the records at once, and
        # the records may arrive first: the approval is recorded all the same,
        # and the status stays where the records moved it.
        late = conn.execute(
            update(REQUESTS)
            .where(REQUESTS.c.request_id == row["request_id"], REQUESTS.c.status == row["status"])
            .values(updated_at=at, **columns)
        )
        if late.rowcount != 1:
            raise WrongStatus("the request changed while this was being done; look again and retry")
        write_audit(
            conn,
            actor=actor,
            action="request.approve",
            request_id=row["request_id"],
            student_local_id=row["local_student_id"],
            detail=f"{row['status']}; the records arrived before the decision",
            now=at,
        )
        system_message(conn, row["request_id"], message, at)
        return
    action = Action.APPROVE if approved else Action.REJECT
    # A rejection's reason stays on the request, for 'rt requests' to show.
    reason = None if approved else columns["reject_reason"]
    change_status(
        conn, row, action, actor=actor, at=at, reason=reason, extra=columns, message=message
    )


def _queue_for_requester(
    conn: Connection,
    row: RowMapping,
    columns: dict[str, Any],
    *,
    at: dt.datetime,
    claim: OutboxClaim | None,
) -> None:
    """Ours: the signed decision to the requester and, for an approval, the delivery."""
    enqueue(
        conn,
        kind="decision",
        request_id=row["request_id"],
        to_district=row["other_district"],
        payload=columns["decision_envelope"],
        now=at,
        claim=claim,
    )
    if columns["approved"]:
        enqueue(
            conn,
            kind="delivery",
            request_id=row["request_id"],
            to_district=row["other_district"],
            payload=columns["transfer_id"].encode("ascii"),
            now=at,
            claim=claim,
        )
