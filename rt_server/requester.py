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
from datetime import timedelta

from sqlalchemy import insert, select

from protos.rt.v1 import common_pb2, peer_pb2
from rt_client.crypto import envelope
from rt_client.errors import Duplicate, InvalidInput, NotFound, PeerAuthError, WrongStatus
from rt_client.ids import district_of_school, parse_school_code
from rt_server import outbox
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

ALL_TABLES = [t for t in common_pb2.TableCode.values() if t != common_pb2.TABLE_CODE_UNSPECIFIED]


def table_list(tables: list[int] | tuple[int, ...]) -> str:
    return ",".join(common_pb2.TableCode.Name(t) for t in sorted(set(tables)))


def parse_table_list(text: str | None) -> list[int]:
    if not text:
        return []
    return [common_pb2.TableCode.Value(name) for name in text.split(",") if name]


def check_tables(tables: list[int]) -> list[int]:
    for t in tables:
        if t not in ALL_TABLES:
            raise InvalidInput("unknown table code")
    return sorted(set(tables)) or list(ALL_TABLES)


def create_request(
    d: District,
    *,
    student_local_id: str,
    prior_school: str,
    prior_local_id: str,
    tables: list[int],
    actor: str,
) -> str:
    """Sign and queue a request for a student enrolled here. Returns its id."""
    school = parse_school_code(prior_school)
    prior = district_of_school(school)
    if prior == d.code:
        raise InvalidInput("that school is in this district; records move within a district without a request")
    entry = d.entry_of(prior)
    if school not in {s.cds_code for s in entry.schools}:
        raise NotFound(f"school {school} is not registered to district {prior}; see 'rt schools search'")
    if len(prior_local_id) > 20:
        raise InvalidInput("the prior local id is longer than 20 characters")
    chosen = check_tables(tables)
    now = d.clock()
    request_id = new_id()
    with d.engine.begin() as conn:
        student = conn.execute(select(STUDENTS).where(STUDENTS.c.local_id == student_local_id)).first()
        if student is None:
            raise NotFound(f"no student {student_local_id} here; enroll them first with 'rt student add'")
        if not student.school:
            raise InvalidInput("the student has no current school; set it when enrolling them")
        message = peer_pb2.RecordsRequest(
            request_id=request_id,
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
        )
        message.created_at.FromDatetime(now)
        message.expires_at.FromDatetime(now + timedelta(days=d.limits.request_ttl_days))
        signed = d.sign(envelope.LABEL_REQUEST, message)
        conn.execute(
            insert(REQUESTS).values(
                request_id=request_id,
                direction="OUTBOUND",
                status="QUEUED",
                other_district=prior,
                requesting_district=d.code,
                requesting_school=student.school,
                prior_district=prior,
                prior_school=school,
                ssid=student.ssid,
                legal_first_name=student.legal_first_name,
                legal_middle_name=student.legal_middle_name,
                legal_last_name=student.legal_last_name,
                birth_date=student.birth_date,
                gender=student.gender,
                prior_local_id=prior_local_id or None,
                local_student_id=student_local_id,
                requested_by=actor,
                tables_requested=table_list(chosen),
                request_envelope=signed.SerializeToString(),
                created_at=now,
                updated_at=now,
                expires_at=now + timedelta(days=d.limits.request_ttl_days),
            )
        )
        outbox.enqueue(
            conn, kind="request", request_id=request_id, to_district=prior, payload=signed.SerializeToString(), now=now
        )
        system_message(conn, request_id, f"Request created by {actor}; queued for district {prior}.", now)
        audit(conn, now, actor, "request.create", request_id=request_id, student_local_id=student_local_id)
    return request_id


def send_request(d: District, item: outbox.OutboxItem, done: outbox.Outbox) -> None:
    """Outbox handler: deliver a queued request; A's signed receipt makes it PENDING."""
    signed = common_pb2.SignedEnvelope.FromString(item.payload)
    stub = d.peers.stub(item.to_district)
    try:
        reply = call_peer(lambda: stub.SubmitRequest(signed, timeout=d.limits.rpc_timeout_seconds))
        receipt = d.open_from(envelope.LABEL_REQUEST_RECEIPT, reply, item.to_district, peer_pb2.RequestReceipt)
        if receipt.request_id != item.request_id or receipt.prior_district != item.to_district:
            raise PeerAuthError("the prior district's receipt names another request")
        note = f"District {item.to_district} received the request."
    except Duplicate:
        # ALREADY_EXISTS: an earlier attempt got through, only the answer was lost.
        note = f"District {item.to_district} already had the request."
    now = d.clock()
    with d.engine.begin() as conn:
        row = load_request(conn, item.request_id, direction="OUTBOUND")
        if row.status == "QUEUED":
            set_request(conn, item.request_id, now, status="PENDING", status_reason=None)
            system_message(conn, item.request_id, note + " Status PENDING.", now)
        done.complete(conn, item)


def receive_decision(d: District, signed: common_pb2.SignedEnvelope, peer: str) -> common_pb2.SignedEnvelope:
    """A's approval or rejection of one of our requests. Returns our signed Ack."""
    decision = d.open_from(envelope.LABEL_DECISION, signed, peer, peer_pb2.Decision)
    if decision.prior_district != peer or decision.requesting_district != d.code:
        raise PeerAuthError(f"decision from {peer} names other districts")
    if not decision.decision_id or len(decision.decision_id) > 36:
        raise InvalidInput("decision without a valid id")
    now = d.clock()
    with d.engine.begin() as conn:
        row = load_peer_request(conn, decision.request_id, "OUTBOUND", peer)
        if not first_time(conn, decision.decision_id, "decision", now):
            raise Duplicate("decision already received")
        if row.status not in ("QUEUED", "PENDING"):
            raise WrongStatus(f"request is {row.status}; it takes no decision now")
        if decision.approved:
            set_request(
                conn,
                row.request_id,
                now,
                status="PENDING",
                approved=True,
                tables_approved=table_list(list(decision.tables)),
                transfer_id=decision.transfer_id or None,
                decision_id=decision.decision_id,
                decided_by=decision.decided_by[:100],
                decided_at=decision.decided_at.ToDatetime(tzinfo=now.tzinfo),
                decision_envelope=signed.SerializeToString(),
            )
            system_message(conn, row.request_id, f"District {peer} approved the request; records are on the way.", now)
        else:
            reason = common_pb2.RejectReason.Name(decision.reason) if decision.reason else "OTHER"
            set_request(
                conn,
                row.request_id,
                now,
                status="REJECTED",
                status_reason=f"{reason}: {decision.reason_text}"[:500] if decision.reason_text else reason,
                approved=False,
                reject_reason=reason,
                reject_text=decision.reason_text[:1000] or None,
                decision_id=decision.decision_id,
                decided_by=decision.decided_by[:100],
                decided_at=decision.decided_at.ToDatetime(tzinfo=now.tzinfo),
                decision_envelope=signed.SerializeToString(),
            )
            system_message(conn, row.request_id, f"District {peer} rejected the request ({reason}).", now)
        audit(conn, now, f"district:{peer}", "decision.receive", request_id=row.request_id)
    return d.ack(decision.decision_id)


def send_now(d: District, request_id: str) -> None:
    """Try the queued request at once, so "the request reaches A at once" (the
    worker would too, a moment later); if A is unreachable it stays QUEUED."""
    d.run_outbox_now(request_id)


def retry_request(d: District, request_id: str, actor: str) -> None:
    """A registrar's retry of a FAILED request: its failed sends start over."""
    now = d.clock()
    with d.engine.begin() as conn:
        row = load_request(conn, request_id)
        if row.status != "FAILED":
            raise WrongStatus(f"request is {row.status}; only FAILED requests can be retried")
        status = "QUEUED" if row.direction == "OUTBOUND" else "PENDING"
        if row.direction == "OUTBOUND" and row.approved:
            status = "PENDING"
        d.outbox.requeue_failed(conn, request_id, now)
        set_request(conn, request_id, now, status=status, status_reason=None, attempts=0)
        system_message(conn, request_id, f"Retry asked by {actor}. Status {status}.", now)
        audit(conn, now, actor, "request.retry", request_id=request_id)
    d.wake_worker()


def mark_failed(d: District, item: outbox.OutboxItem, reason: str) -> None:
    """The outbox gave up on an item: its request becomes FAILED, with the reason."""
    now = d.clock()
    with d.engine.begin() as conn:
        row = load_request(conn, item.request_id)
        if row.status in ("QUEUED", "PENDING"):
            text = f"could not deliver the {item.kind.replace('_', ' ')} to district {item.to_district}: {reason}"
            set_request(conn, item.request_id, now, status="FAILED", status_reason=text[:500])
            system_message(conn, item.request_id, f"Status FAILED: {text}"[:2000], now)
            audit(conn, now, "system", "request.failed", request_id=item.request_id, detail=item.kind)
