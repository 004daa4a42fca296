"""The prior district's side (A): receive a request, decide, hear of the import.

A verifies a request (signature by the requesting district's current key, the
districts named inside equal to the TLS peer, not expired, not seen before),
stores it PENDING and answers with a signed receipt. A's registrar approves
(choosing the matched student and the tables) or rejects with a coded reason;
the signed decision is queued for B, and on approval so is the delivery
(``sender``). B's import notice moves the request SENT -> COMPLETE.
"""

from __future__ import annotations

from collections.abc import Sequence

from protos.rt.v1 import common_pb2, peer_pb2
from rt_client.crypto import envelope
from rt_client.errors import (
    Duplicate,
    InvalidInput,
    NotFound,
    PeerUnavailable,
    RecordsTransferError,
    WrongStatus,
)
from rt_client.ids import (
    DistrictCode,
    MessageId,
    RequestId,
    TransferId,
    district_of_school,
    parse_message_id,
    parse_request_id,
    parse_school_code,
    parse_transfer_id,
)
from rt_client.peers import call_peer
from rt_server.core import due_dates, matching, validate
from rt_server.core.model import RequestRecord
from rt_server.core.statuses import Action, Direction, Status
from rt_server.core.table_codes import table_enums
from rt_server.core.tables import table_spec
from rt_server.flows import outbox
from rt_server.flows.claims import require_claimed
from rt_server.flows.district import District, load_peer_request, new_id
from rt_server.store import (
    calendars,
    candidates,
    decisions,
    flags,
    request_status,
    requests,
    seen_messages,
    units,
)


def receive_request(
    d: District, signed: common_pb2.SignedEnvelope, peer: DistrictCode
) -> common_pb2.SignedEnvelope:
    """Verify and store B's request as PENDING. Returns our signed receipt.

    Raises ``PeerAuthError`` (a district named that is not the peer),
    ``InvalidInput``, ``NotFound`` (not our school), ``IntegrityError``, ``Duplicate``.
    """
    request = d.open_from(envelope.LABEL_REQUEST, signed, peer, peer_pb2.RecordsRequest)
    # Ids, codes and times are checked before any of them is used (a query, a
    # log line) and before anything is stored; the peer is the TLS peer, checked.
    require_claimed(request.requesting_district, peer, "the request's requesting district")
    if request.prior_district != d.code:
        raise InvalidInput("the request is addressed to another district")
    request_id = parse_request_id(request.request_id)
    requesting_school = parse_school_code(request.requesting_school)
    require_claimed(
        district_of_school(requesting_school), peer, "the district of the requesting school"
    )
    prior_school = parse_school_code(request.prior_school)
    if prior_school not in {s.cds_code for s in d.entry_of(d.code).schools}:
        raise NotFound("the request names a school that is not ours")
    now = d.clock()
    if not request.HasField("created_at") or not request.HasField("expires_at"):
        raise InvalidInput("a request must say when it was created and when it expires")
    created = validate.peer_time("the request's created-at", request.created_at, now)
    expires = validate.datetime_of("the request's expires-at", request.expires_at)
    validate.check_request_expiry(created, expires, now)
    held = requests.request_side(d.engine, request_id)
    if held is not None:
        # Only a re-send of the peer's own request: an id that is another
        # district's (or one of our own requests') has no requester the peer can
        # be. "Already received" would tell the peer it was delivered; it never will be.
        side, other = held
        require_claimed(
            other if side is Direction.INBOUND else None,
            peer,
            f"the requester of the request {request_id} we hold",
        )
    # The law's clock starts at receipt (EC 49068, 49069.5, 48915.1), counted
    # in the responding school's calendar.
    due = due_dates.due_date(
        due_dates.RequestFacts(
            received_at=now,
            school=prior_school,
            foster_youth=request.foster_youth,
            discipline_requested=request.discipline_records_requested,
        ),
        calendars.calendar_of(d.engine, prior_school),
    )
    record = requests.record_inbound_request(
        d.engine, request, signed.SerializeToString(), now=now, due=due
    )
    # EC 49068.6: a request for a student flagged missing alerts law enforcement
    # as soon as it arrives (by exact SSID match; a confirmed match at approval).
    for found in match_candidates(d, request_id):
        missing = flags.StudentFlag.MISSING_CHILD
        if found.exact and missing in {f.flag for f in flags.flags_of(d.engine, found.local_id)}:
            _hold_for_missing_child(d, record, found.local_id)
    receipt = peer_pb2.RequestReceipt(
        request_id=request.request_id,
        prior_district=d.code,
        requesting_district=peer,
        status=common_pb2.PENDING,
    )
    receipt.received_at.FromDatetime(now)
    return d.sign(envelope.LABEL_REQUEST_RECEIPT, receipt)


def approve_request(
    d: District,
    *,
    request_id: RequestId,
    student_local_id: str,
    tables: Sequence[common_pb2.TableCode.ValueType],
    actor: str,
    discipline_answer: int = common_pb2.DISCIPLINE_ANSWER_UNSPECIFIED,
) -> str:
    """Approve: record the signed decision, queue it and the delivery. Returns the transfer id.

    Raises ``InvalidInput`` (e.g. a request for suspension/expulsion records not
    answered, EC 48201(b)) and ``WrongStatus`` (held: the student is flagged
    missing, EC 49068.6).
    """
    request = requests.get_request(d.engine, request_id)
    if request.direction is not Direction.INBOUND:
        raise WrongStatus("only requests we received can be approved")
    if not student_local_id:
        exact = [c for c in match_candidates(d, request_id) if c.exact]
        if len(exact) != 1:
            raise InvalidInput(
                "the SSID does not match exactly one student here; confirm the student "
                "with --student (see 'rt match')"
            )
        student_local_id = exact[0].local_id
    if request.discipline_requested and discipline_answer not in _ANSWERS:
        raise InvalidInput(
            "this request asks for suspension and expulsion records (EC 48201(b)): answer "
            "that part, --discipline-records sent (there are some) or none-on-file"
        )
    flagged = {f.flag for f in flags.flags_of(d.engine, student_local_id)}
    if flags.StudentFlag.MISSING_CHILD in flagged:
        _hold_for_missing_child(d, request, student_local_id)
        raise WrongStatus(
            "approval held: this student is flagged missing (EC 49068.6); law enforcement is "
            "being alerted with the requesting district's details. Do not send the records "
            "until law enforcement says so and the flag is cleared ('rt student flag ID "
            "missing-child --clear')."
        )
    # EC 48904.3 withholding travels with the records, but never a foster
    # youth's (EC 49069.5): their approval goes ahead without it.
    withhold = flags.StudentFlag.WITHHOLD_GRADES in flagged and not request.foster_youth
    chosen = table_enums(tables) if tables else table_enums(request.tables_requested)
    decision = _decide(
        d,
        request_id,
        request,
        actor,
        peer_pb2.Decision(
            approved=True,
            tables=chosen,
            transfer_id=new_id(),
            discipline_answer=(
                discipline_answer  # type: ignore[arg-type]
                if request.discipline_requested
                else common_pb2.DISCIPLINE_ANSWER_UNSPECIFIED
            ),
            grades_withheld=withhold,
        ),
        local_student_id=student_local_id,
    )
    return decision.transfer_id


_ANSWERS = {
    common_pb2.DISCIPLINE_RECORDS_SENT: "SENT",
    common_pb2.DISCIPLINE_NONE_ON_FILE: "NONE_ON_FILE",
}


def _hold_for_missing_child(d: District, request: RequestRecord, student_local_id: str) -> None:
    """EC 49068.6: hold the approval, alert law enforcement (through the mail side's
    notices, once per request) with the requesting district's details, in the audit log."""
    requester = request.requesting_district
    try:
        entry = d.entry_of(DistrictCode(requester))
        name = entry.name
        school = next(
            (s.name for s in entry.schools if s.cds_code == request.requesting_school), ""
        )
    except RecordsTransferError:  # the directory is out of reach: the codes alone
        name, school = "", ""
    details = (
        f"Records requested by district {requester} {name}, school "
        f"{request.requesting_school} {school}, request {request.request_id}, "
        f"asked by {request.requested_by or 'unknown'}"
    )
    flags.hold_for_missing_child(
        d.engine,
        request_id=request.request_id,
        student_local_id=student_local_id,
        recipient=d.law_enforcement_contact or "(no law_enforcement_contact configured)",
        details=details,
        now=d.clock(),
    )


def _identity_of(row: RequestRecord) -> matching.StudentIdentity:
    return matching.StudentIdentity(
        ssid=row.ssid,
        legal_first_name=row.legal_first_name,
        legal_last_name=row.legal_last_name,
        birth_date=row.birth_date,
        gender=row.gender,
    )


def match_candidates(d: District, request_id: RequestId) -> list[matching.Candidate]:
    """Our students who may be the one the request names, best first. Raises ``NotFound``."""
    with d.reading() as conn:
        row = requests.load_request(conn, request_id, direction=Direction.INBOUND)
        return candidates.match_student(conn, _identity_of(row))


def reject_request(
    d: District, *, request_id: RequestId, reason: int, text: str, actor: str
) -> None:
    if (
        reason not in common_pb2.RejectReason.values()
        or reason == common_pb2.REJECT_REASON_UNSPECIFIED
    ):
        raise InvalidInput("choose a reason for the rejection")
    request = requests.get_request(d.engine, request_id)
    if request.direction is not Direction.INBOUND:
        raise WrongStatus("only requests we received can be rejected")
    if request.foster_youth and reason == common_pb2.RECORDS_WITHHELD:
        raise InvalidInput(
            "a foster youth's records may not be withheld (EC 49069.5): approve the request"
        )
    _decide(
        d,
        request_id,
        request,
        actor,
        peer_pb2.Decision(approved=False, reason=reason, reason_text=text),  # type: ignore[arg-type]
    )


def _decide(
    d: District,
    request_id: RequestId,
    request: RequestRecord,
    actor: str,
    outcome: peer_pb2.Decision,
    *,
    local_student_id: str | None = None,
) -> peer_pb2.Decision:
    """Sign our decision on ``request``, record it, and hand it (and any delivery) over.

    ``outcome`` holds what differs between an approval (``approved``,
    ``tables``, ``transfer_id``) and a rejection (``reason``, ``reason_text``);
    the store records what is signed. Raises what ``decisions.record_decision``
    raises (``WrongStatus``, ``InvalidInput``, ``NotFound``).
    """
    now = d.clock()
    decision = peer_pb2.Decision(
        decision_id=new_id(),
        request_id=request_id,
        prior_district=d.code,
        requesting_district=request.requesting_district,
        decided_by=actor,
    )
    decision.MergeFrom(outcome)
    decision.decided_at.FromDatetime(now)
    signed = d.sign(envelope.LABEL_DECISION, decision)
    decisions.record_decision(
        d.engine,
        decisions.Decision(
            request_id=RequestId(request_id),
            decision_id=MessageId(decision.decision_id),
            approved=decision.approved,
            actor=actor,
            envelope=signed.SerializeToString(),
            tables=[table_spec(t).code for t in decision.tables],
            transfer_id=TransferId(decision.transfer_id) if decision.approved else None,
            local_student_id=local_student_id,
            reason=None if decision.approved else decision.reason,
            reason_text=decision.reason_text or None,
            discipline_answer=_ANSWERS.get(decision.discipline_answer),
            grades_withheld=decision.grades_withheld,
        ),
        now=now,
        claim=d.outbox_claim(),
    )
    d.hand_over(request_id)  # the decision and, for an approval, the delivery, at once
    return decision


def send_signed(d: District, item: outbox.OutboxItem, done: outbox.Outbox, rpc: str) -> None:
    """Outbox handler for decisions, notices and messages: send, check the signed Ack."""
    signed = common_pb2.SignedEnvelope.FromString(item.payload)
    stub = d.peers.stub(item.to_district)
    try:
        reply = call_peer(lambda: getattr(stub, rpc)(signed, timeout=d.limits.rpc_timeout_seconds))
        ack = d.open_from(envelope.LABEL_ACK, reply, item.to_district, peer_pb2.Ack)
        # Made when the peer answered: now, give or take the clocks' skew.
        validate.peer_time("the acknowledgement's time", ack.at, d.clock())
    except Duplicate:
        pass  # an earlier attempt got through
    with units.write_not_durable(d.engine) as conn:  # lost, it is sent again: the peer dedupes
        done.complete(conn, item)


def receive_import_notice(
    d: District, signed: common_pb2.SignedEnvelope, peer: DistrictCode
) -> common_pb2.SignedEnvelope:
    """B imported the records: the request is COMPLETE. Returns our signed Ack.

    Raises ``PeerAuthError`` (districts named that are not the peer and us),
    ``InvalidInput``, ``Duplicate`` (seen before), ``PeerUnavailable`` (try again).
    """
    notice = d.open_from(envelope.LABEL_IMPORT_NOTICE, signed, peer, peer_pb2.ImportNotice)
    require_claimed(notice.requesting_district, peer, "the import notice's requesting district")
    require_claimed(notice.prior_district, d.code, "the import notice's prior district")
    notice_id = parse_message_id(notice.notice_id, "import notice id")
    request_id = parse_request_id(notice.request_id)
    transfer_id = parse_transfer_id(notice.transfer_id)
    now = d.clock()
    with d.writing() as conn:
        row = load_peer_request(conn, request_id, Direction.INBOUND, peer)
        # Checked before the notice id is remembered: a refusal changes nothing.
        validate.peer_time(
            "the import notice's imported-at", notice.imported_at, now, not_before=row.created_at
        )
        seen_messages.remember_message(conn, notice_id, "import_notice", now=now)
        if row.transfer_id != transfer_id:
            raise InvalidInput("the import notice names another transfer")
        if row.status is Status.PENDING and row.approved:
            # B imported before our worker recorded B's delivery receipt (it is
            # about to): UNAVAILABLE makes B send the notice again shortly.
            raise PeerUnavailable("the delivery receipt is not recorded yet; try again")
        request_status.set_status(
            conn,
            RequestId(row.request_id),
            Action.COMPLETE,
            actor=f"district {peer}",
            reason=f"District {peer} imported the records.",
            now=now,
        )
    return d.ack(notice_id)
