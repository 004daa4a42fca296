"""The prior district's side (A): receive a request, decide, hear of the import.

A verifies a request (signature by the requesting district's current key, the
districts named inside equal to the TLS peer, not expired, not seen before),
stores it PENDING and answers with a signed receipt. A's registrar approves
(choosing the matched student and the tables) or rejects with a coded reason;
the signed decision is queued for B, and on approval so is the delivery
(``sender``). B's import notice moves the request SENT -> COMPLETE.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from sqlalchemy import insert, select

from protos.rt.v1 import common_pb2, peer_pb2
from rt_client.crypto import envelope
from rt_client.errors import Duplicate, InvalidInput, NotFound, PeerAuthError, WrongStatus
from rt_client.ids import district_of_school, parse_school_code
from rt_server import outbox
from rt_server.core import matching
from rt_server.db.schema import REQUESTS, STUDENTS
from rt_server.district import (
    District,
    audit,
    first_time,
    load_peer_request,
    load_request,
    new_id,
    set_request,
    system_message,
)
from rt_server.peers import call_peer
from rt_server.requester import check_tables, parse_table_list, table_list

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NAME_MAX = 60


def _check_identity(student: peer_pb2.StudentIdentity) -> date:
    for value, limit in (
        (student.ssid, 10),
        (student.legal_first_name, _NAME_MAX),
        (student.legal_middle_name, _NAME_MAX),
        (student.legal_last_name, _NAME_MAX),
        (student.gender, 10),
        (student.prior_local_id, 20),
    ):
        if len(value) > limit:
            raise InvalidInput("a student field is longer than allowed")
    if student.ssid and not student.ssid.isascii():
        raise InvalidInput("malformed SSID")
    if not student.legal_last_name or not student.legal_first_name:
        raise InvalidInput("the request names no student")
    try:
        return date.fromisoformat(student.birth_date)
    except ValueError as exc:
        raise InvalidInput("the request's birth date is not a real date") from exc


def receive_request(d: District, signed: common_pb2.SignedEnvelope, peer: str) -> common_pb2.SignedEnvelope:
    """Verify and store B's request as PENDING. Returns our signed receipt."""
    request = d.open_from(envelope.LABEL_REQUEST, signed, peer, peer_pb2.RecordsRequest)
    if request.requesting_district != peer:
        raise PeerAuthError(f"request from {peer} claims to come from {request.requesting_district}")
    if request.prior_district != d.code:
        raise InvalidInput("the request is addressed to another district")
    if not _UUID.fullmatch(request.request_id) or len(request.nonce) != 16:
        raise InvalidInput("malformed request id or nonce")
    requesting_school = parse_school_code(request.requesting_school)
    if district_of_school(requesting_school) != peer:
        raise PeerAuthError("the requesting school is not the requesting district's")
    prior_school = parse_school_code(request.prior_school)
    if prior_school not in {s.cds_code for s in d.entry_of(d.code).schools}:
        raise NotFound("the request names a school that is not ours")
    birth_date = _check_identity(request.student)
    tables = check_tables(list(request.tables))
    now = d.clock()
    tz = now.tzinfo
    created, expires = request.created_at.ToDatetime(tzinfo=tz), request.expires_at.ToDatetime(tzinfo=tz)
    skew = timedelta(seconds=d.limits.clock_skew_seconds)
    if expires <= now or created > now + skew or expires - created > timedelta(days=366):
        raise InvalidInput("the request has expired or its dates are out of range")
    with d.engine.begin() as conn:
        if conn.execute(select(REQUESTS.c.request_id).where(REQUESTS.c.request_id == request.request_id)).first():
            raise Duplicate("request already received")
        student = request.student
        conn.execute(
            insert(REQUESTS).values(
                request_id=request.request_id,
                direction="INBOUND",
                status="PENDING",
                other_district=peer,
                requesting_district=peer,
                requesting_school=requesting_school,
                prior_district=d.code,
                prior_school=prior_school,
                ssid=student.ssid or None,
                legal_first_name=student.legal_first_name,
                legal_middle_name=student.legal_middle_name or None,
                legal_last_name=student.legal_last_name,
                birth_date=birth_date,
                gender=student.gender or None,
                prior_local_id=student.prior_local_id or None,
                requested_by=request.requested_by[:100] or None,
                tables_requested=table_list(tables),
                request_envelope=signed.SerializeToString(),
                created_at=now,
                updated_at=now,
                expires_at=expires,
            )
        )
        system_message(conn, request.request_id, f"Request received from district {peer}. Status PENDING.", now)
        audit(conn, now, f"district:{peer}", "request.receive", request_id=request.request_id)
    receipt = peer_pb2.RequestReceipt(
        request_id=request.request_id,
        prior_district=d.code,
        requesting_district=peer,
        status=common_pb2.PENDING,
    )
    receipt.received_at.FromDatetime(now)
    return d.sign(envelope.LABEL_REQUEST_RECEIPT, receipt)


def _undecided(conn, request_id: str):  # type: ignore[no-untyped-def]
    row = load_request(conn, request_id, direction="INBOUND")
    if row.status != "PENDING":
        raise WrongStatus(f"request is {row.status}; only PENDING requests can be decided")
    if row.approved is not None:
        raise WrongStatus("request was already decided")
    return row


def approve_request(
    d: District, *, request_id: str, student_local_id: str, tables: list[int], actor: str
) -> str:
    """Approve: record the signed decision and queue it and the delivery. Returns the transfer id."""
    now = d.clock()
    with d.engine.begin() as conn:
        row = _undecided(conn, request_id)
        if student_local_id:
            student = conn.execute(select(STUDENTS).where(STUDENTS.c.local_id == student_local_id)).first()
            if student is None:
                raise NotFound(f"no student {student_local_id} here")
        else:
            candidates = matching.match_student(conn, _identity_of(row))
            exact = [c for c in candidates if c.exact]
            if len(exact) != 1:
                raise InvalidInput(
                    "the SSID does not match exactly one student here; confirm the student "
                    "with --student (see 'rt match')"
                )
            student_local_id = exact[0].local_id
        requested = parse_table_list(row.tables_requested)
        chosen = check_tables(tables) if tables else requested
        if not set(chosen) <= set(requested):
            raise InvalidInput("you can only send tables that were requested")
        transfer_id = new_id()
        decision = peer_pb2.Decision(
            decision_id=new_id(),
            request_id=request_id,
            prior_district=d.code,
            requesting_district=row.requesting_district,
            approved=True,
            tables=chosen,
            transfer_id=transfer_id,
            decided_by=actor,
        )
        decision.decided_at.FromDatetime(now)
        signed = d.sign(envelope.LABEL_DECISION, decision)
        set_request(
            conn,
            request_id,
            now,
            approved=True,
            tables_approved=table_list(chosen),
            local_student_id=student_local_id,
            decision_id=decision.decision_id,
            decided_by=actor,
            decided_at=now,
            transfer_id=transfer_id,
            decision_envelope=signed.SerializeToString(),
        )
        to = row.requesting_district
        outbox.enqueue(conn, kind="decision", request_id=request_id, to_district=to, payload=signed.SerializeToString(), now=now)
        outbox.enqueue(conn, kind="delivery", request_id=request_id, to_district=to, payload=transfer_id.encode(), now=now)
        system_message(conn, request_id, f"Approved by {actor}; sending {table_list(chosen)}.", now)
        audit(conn, now, actor, "request.approve", request_id=request_id, student_local_id=student_local_id)
    d.wake_worker()
    return transfer_id


def _identity_of(row) -> matching.StudentIdentity:  # type: ignore[no-untyped-def]
    return matching.StudentIdentity(
        ssid=row.ssid,
        legal_first_name=row.legal_first_name,
        legal_last_name=row.legal_last_name,
        birth_date=row.birth_date,
        gender=row.gender,
    )


def match_candidates(d: District, request_id: str) -> list[matching.Candidate]:
    with d.reading() as conn:
        row = load_request(conn, request_id, direction="INBOUND")
        return matching.match_student(conn, _identity_of(row))


def reject_request(d: District, *, request_id: str, reason: int, text: str, actor: str) -> None:
    if reason not in common_pb2.RejectReason.values() or reason == common_pb2.REJECT_REASON_UNSPECIFIED:
        raise InvalidInput("choose a reason for the rejection")
    if reason == common_pb2.OTHER and not text.strip():
        raise InvalidInput("a rejection for 'other' reasons needs an explanation (--text)")
    if len(text) > 1000:
        raise InvalidInput("the explanation is longer than 1000 characters")
    now = d.clock()
    reason_name = common_pb2.RejectReason.Name(reason)
    with d.engine.begin() as conn:
        row = _undecided(conn, request_id)
        decision = peer_pb2.Decision(
            decision_id=new_id(),
            request_id=request_id,
            prior_district=d.code,
            requesting_district=row.requesting_district,
            approved=False,
            reason=reason,  # type: ignore[arg-type]
            reason_text=text,
            decided_by=actor,
        )
        decision.decided_at.FromDatetime(now)
        signed = d.sign(envelope.LABEL_DECISION, decision)
        set_request(
            conn,
            request_id,
            now,
            status="REJECTED",
            status_reason=reason_name,
            approved=False,
            reject_reason=reason_name,
            reject_text=text or None,
            decision_id=decision.decision_id,
            decided_by=actor,
            decided_at=now,
            decision_envelope=signed.SerializeToString(),
        )
        outbox.enqueue(
            conn, kind="decision", request_id=request_id, to_district=row.requesting_district,
            payload=signed.SerializeToString(), now=now,
        )
        system_message(conn, request_id, f"Rejected by {actor} ({reason_name}).", now)
        audit(conn, now, actor, "request.reject", request_id=request_id, detail=reason_name)
    d.wake_worker()


def send_signed(d: District, item: outbox.OutboxItem, done: outbox.Outbox, rpc: str) -> None:
    """Outbox handler for decisions, notices and messages: send, check the signed Ack."""
    signed = common_pb2.SignedEnvelope.FromString(item.payload)
    stub = d.peers.stub(item.to_district)
    try:
        reply = call_peer(lambda: getattr(stub, rpc)(signed, timeout=d.limits.rpc_timeout_seconds))
        d.open_from(envelope.LABEL_ACK, reply, item.to_district, peer_pb2.Ack)
    except Duplicate:
        pass  # an earlier attempt got through
    with d.engine.begin() as conn:
        done.complete(conn, item)


def receive_import_notice(d: District, signed: common_pb2.SignedEnvelope, peer: str) -> common_pb2.SignedEnvelope:
    notice = d.open_from(envelope.LABEL_IMPORT_NOTICE, signed, peer, peer_pb2.ImportNotice)
    if notice.requesting_district != peer or notice.prior_district != d.code:
        raise PeerAuthError(f"import notice from {peer} names other districts")
    now = d.clock()
    with d.engine.begin() as conn:
        row = load_peer_request(conn, notice.request_id, "INBOUND", peer)
        if not first_time(conn, notice.notice_id, "import_notice", now):
            raise Duplicate("import notice already received")
        if row.status != "SENT" or row.transfer_id != notice.transfer_id:
            raise WrongStatus(f"request is {row.status}; an import notice needs SENT")
        set_request(conn, row.request_id, now, status="COMPLETE", status_reason=None)
        system_message(conn, row.request_id, f"District {peer} imported the records. Status COMPLETE.", now)
        audit(conn, now, f"district:{peer}", "import.notice", request_id=row.request_id)
    return d.ack(notice.notice_id)
