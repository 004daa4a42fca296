"""The requesting district's side (B): ask, hear the decision, import.

B's registrar creates a request; B signs it and queues it for the prior
district (A). The delivery worker (or the registrar's own call, at once) sends
it; A's signed receipt moves it QUEUED -> PENDING. A's signed decision moves
it to REJECTED, or records the approval; the records themselves arrive through
``receiver``. Import writes the chosen rows in one transaction and queues the
notice that lets A mark its side COMPLETE.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta

from protos.rt.v1 import common_pb2, peer_pb2
from rt_client.crypto import envelope
from rt_client.errors import Duplicate, InvalidInput, NotFound, PeerAuthError, WrongStatus
from rt_client.ids import (
    DistrictCode,
    RequestId,
    district_of_school,
    parse_message_id,
    parse_request_id,
    parse_school_code,
    parse_transfer_id,
)
from rt_client.peers import call_peer
from rt_server.core import validate
from rt_server.core.statuses import Action, Direction, Status
from rt_server.core.table_codes import table_enums
from rt_server.flows import outbox
from rt_server.flows.claims import require_claimed
from rt_server.flows.district import District, load_peer_request, new_id
from rt_server.store import decisions, request_status, requests, students, units
from rt_server.store import outbox as queue


def create_request(
    d: District,
    *,
    student_local_id: str,
    prior_school: str,
    prior_local_id: str,
    tables: Sequence[common_pb2.TableCode.ValueType],
    actor: str,
    unit: units.Unit | None = None,
    foster_youth: bool = False,
    discipline_records_requested: bool = False,
) -> RequestId:
    """Sign and queue a request for a student enrolled here. Returns its id.

    ``foster_youth`` marks the student a foster youth (EC 49069.5: records due in
    2 business days); ``discipline_records_requested`` asks for suspension and
    expulsion records (EC 48201(b)).

    In ``unit`` if given (a caller's transaction, e.g. one that enrolls the
    student too), else a transaction of its own. Raises ``InvalidInput`` and
    ``NotFound`` (no such school or student).
    """
    bind = d.engine if unit is None else unit
    school = parse_school_code(prior_school)
    prior = district_of_school(school)
    if prior == d.code:
        raise InvalidInput(
            "that school is in this district; records move within a district without a request"
        )
    entry = d.entry_of(prior)
    if school not in {s.cds_code for s in entry.schools}:
        raise NotFound(
            f"school {school} is not registered to district {prior}; see 'rt schools search'"
        )
    chosen = table_enums(tables)
    student = students.get_student(bind, student_local_id)
    if not student.school:
        raise InvalidInput("the student has no current school; set it when enrolling them")
    now = d.clock()
    message = peer_pb2.RecordsRequest(
        request_id=new_id(),
        requesting_district=d.code,
        requesting_school=student.school,
        prior_district=prior,
        prior_school=school,
        student=peer_pb2.StudentIdentity(
            ssid=student.ssid or "",
            legal_first_name=student.legal_first_name,
            legal_middle_name=student.legal_middle_name or "",
            legal_last_name=student.legal_last_name,
            birth_date=student.birth_date.isoformat(),
            gender=student.gender or "",
            prior_local_id=prior_local_id,
        ),
        tables=chosen,
        nonce=os.urandom(16),
        requested_by=actor,
        foster_youth=foster_youth,
        discipline_records_requested=discipline_records_requested,
    )
    message.created_at.FromDatetime(now)
    message.expires_at.FromDatetime(now + timedelta(days=d.limits.request_ttl_days))
    signed = d.sign(envelope.LABEL_REQUEST, message)
    requests.record_outbound_request(
        bind,
        message,
        signed.SerializeToString(),
        local_student_id=student_local_id,
        actor=actor,
        now=now,
        claim=d.outbox_claim(),  # sent by send_now, in this thread
    )
    return RequestId(message.request_id)


def send_request(d: District, item: outbox.OutboxItem, done: outbox.Outbox) -> None:
    """Outbox handler: deliver a queued request; A's signed receipt makes it PENDING."""
    signed = common_pb2.SignedEnvelope.FromString(item.payload)
    stub = d.peers.stub(item.to_district)
    try:
        reply = call_peer(lambda: stub.SubmitRequest(signed, timeout=d.limits.rpc_timeout_seconds))
        receipt = d.open_from(
            envelope.LABEL_REQUEST_RECEIPT, reply, item.to_district, peer_pb2.RequestReceipt
        )
        require_claimed(
            receipt.prior_district, item.to_district, "the request receipt's prior district"
        )
        if receipt.request_id != item.request_id:
            raise PeerAuthError("the prior district's receipt names another request")
        # Made when A answered: now, give or take the clocks' skew.
        validate.peer_time("the request receipt's received-at", receipt.received_at, d.clock())
        note = f"District {item.to_district} received the request."
    except Duplicate:
        # ALREADY_EXISTS: an earlier attempt got through, only the answer was lost.
        note = f"District {item.to_district} already had the request."
    with units.write_not_durable(d.engine) as conn:  # lost, it is sent again: A answers Duplicate
        row = requests.load_request(conn, item.request_id, direction=Direction.OUTBOUND)
        if row.status is Status.QUEUED:
            request_status.set_status(
                conn,
                RequestId(item.request_id),
                Action.ACCEPT,
                actor=f"district {item.to_district}",
                reason=note,
                now=d.clock(),
            )
        done.complete(conn, item)


def receive_decision(
    d: District, signed: common_pb2.SignedEnvelope, peer: DistrictCode
) -> common_pb2.SignedEnvelope:
    """A's approval or rejection of one of our requests. Returns our signed Ack.

    Raises ``PeerAuthError`` (districts named that are not the peer and us),
    ``InvalidInput``, ``Duplicate`` (seen before), ``WrongStatus``.
    """
    decision = d.open_from(envelope.LABEL_DECISION, signed, peer, peer_pb2.Decision)
    require_claimed(decision.prior_district, peer, "the decision's prior district")
    require_claimed(decision.requesting_district, d.code, "the decision's requesting district")
    # Ids and the time are checked before any is used (a query, a log line) or stored.
    decision_id = parse_message_id(decision.decision_id, "decision id")
    request_id = parse_request_id(decision.request_id)
    transfer_id = parse_transfer_id(decision.transfer_id) if decision.transfer_id else None
    now = d.clock()
    with d.reading() as conn:
        request = load_peer_request(conn, request_id, Direction.OUTBOUND, peer)
    # A decision may come long after it was made (a send retried weeks later),
    # never before the request it decides.
    decided_at = validate.peer_time(
        "the decision's decided-at", decision.decided_at, now, not_before=request.created_at
    )
    # Enum values outside the proto's (proto3 keeps unknown ones) would make
    # Name() raise ValueError: a crash instead of a refusal.
    if decision.reason not in common_pb2.RejectReason.values() or any(
        t not in common_pb2.TableCode.values() for t in decision.tables
    ):
        raise InvalidInput("decision names an unknown reason or table")
    reason = common_pb2.RejectReason.Name(decision.reason) if decision.reason else "OTHER"
    decisions.record_decision(
        d.engine,
        decisions.Decision(
            request_id=request_id,
            decision_id=decision_id,
            approved=decision.approved,
            actor=f"district {peer}",
            envelope=signed.SerializeToString(),
            tables=[common_pb2.TableCode.Name(t) for t in decision.tables],
            transfer_id=transfer_id,
            reason=None if decision.approved else reason,
            reason_text=decision.reason_text or None,
            decided_by=decision.decided_by[:100] or None,
            decided_at=decided_at,
            discipline_answer=_ANSWERS.get(decision.discipline_answer),
            grades_withheld=decision.approved and decision.grades_withheld,
        ),
        now=now,
    )
    return d.ack(decision_id)


# EC 48201(b): the prior district's answer about suspension/expulsion records.
_ANSWERS = {
    common_pb2.DISCIPLINE_RECORDS_SENT: "SENT",
    common_pb2.DISCIPLINE_NONE_ON_FILE: "NONE_ON_FILE",
}


def send_now(d: District, request_id: RequestId) -> None:
    """Try the queued request at once, so "the request reaches A at once" (the
    worker would too, a moment later); if A is unreachable it stays QUEUED."""
    d.run_outbox_now(request_id)


def retry_request(d: District, request_id: RequestId, actor: str) -> str:
    """A registrar's retry (``rt retry``), either direction. Returns what it did.

    A FAILED request's failed sends start over, horizon and all. Any other
    request's waiting sends are made due now: pushed past their backoff, with
    their attempts and horizon unchanged. Raises ``NotFound``, ``WrongStatus``
    (nothing to retry: not FAILED and nothing waits to be sent).
    """
    request = requests.get_request(d.engine, request_id)
    if request.status is Status.FAILED:
        request_status.set_status(
            d.engine, RequestId(request_id), Action.RETRY, actor=actor, now=d.clock()
        )
        d.wake_worker()
        return (
            f"Retrying request {request_id}: its failed sends to district "
            f"{request.other_district} start over now, with a fresh horizon."
        )
    pushed, sending = queue.push_due(d.engine, request_id, d.clock())
    if pushed:
        d.wake_worker()
        return (
            f"Pushed {pushed} waiting send(s) to district {request.other_district}: tried "
            "now, not after their backoff (attempts and the horizon are unchanged)."
        )
    if sending:
        return (
            f"A send to district {request.other_district} is under way right now; "
            "nothing to push. 'rt wait' follows it."
        )
    raise WrongStatus(
        f"nothing to retry: request {request_id} is {request.status} and nothing waits to be "
        "sent for it ('rt retry' restarts a FAILED request or pushes a waiting send)"
    )


def mark_failed(d: District, item: outbox.OutboxItem, reason: str) -> None:
    """The outbox gave up on an item: its request becomes FAILED, with the reason."""
    what = item.kind.replace("_", " ")
    text = f"could not deliver the {what} to district {item.to_district}: {reason}"
    try:
        request_status.set_status(
            d.engine,
            RequestId(item.request_id),
            Action.FAIL,
            actor="delivery worker",
            reason=text[:500],
            now=d.clock(),
        )
    except WrongStatus:
        pass  # already past the point where a failed send matters (e.g. REJECTED)
