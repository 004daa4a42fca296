"""The ``Registrar`` servicer: the local service behind the ``rt`` CLI.

Translation only: proto in, flow or store call, proto out. Errors become
status codes (with registrar-readable text) in ``rt_server.rpc.errors``.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format

from protos.rt.v1 import common_pb2, registrar_pb2, registrar_pb2_grpc
from rt_client.errors import InvalidInput, PeerAuthError
from rt_client.ids import RequestId, TransferId
from rt_server.core import tables
from rt_server.core.statuses import Direction
from rt_server.core.table_codes import parse_counts
from rt_server.flows import batches, compliance, lookups, messages, requester, responder, review
from rt_server.flows.district import District
from rt_server.rpc.compliance_rpcs import ComplianceRpcs, flag_protos

_ROW_CLASS = {
    "NEW": registrar_pb2.NEW,
    "DUPLICATE": registrar_pb2.DUPLICATE,
    "CONFLICT": registrar_pb2.CONFLICT,
}


_DISCIPLINE_ANSWER = {
    "SENT": common_pb2.DISCIPLINE_RECORDS_SENT,
    "NONE_ON_FILE": common_pb2.DISCIPLINE_NONE_ON_FILE,
}


# The roles that may answer an inbound request (approve, reject). Empty: the rt CLI, an
# administrator's tool, trusted as the socket's file mode trusts it (DESIGN section 9).
_ANSWERING_ROLES = frozenset({"", "responder", "admin"})


def _may_answer(role: str) -> None:
    if role not in _ANSWERING_ROLES:
        raise PeerAuthError(
            f"the staff member's role ({role[:20]}) may not approve or reject an inbound "
            "request: nothing was changed"
        )


def _actor(value: str) -> str:
    actor = value.strip() or "unknown"
    if len(actor) > 100:
        raise InvalidInput("the staff member's name is longer than 100 characters")
    return actor


def _student_proto(s: Any) -> registrar_pb2.Student:
    return registrar_pb2.Student(
        local_id=s.local_id,
        ssid=s.ssid or "",
        legal_first_name=s.legal_first_name,
        legal_middle_name=s.legal_middle_name or "",
        legal_last_name=s.legal_last_name,
        birth_date=s.birth_date.isoformat(),
        gender=s.gender or "",
        school=s.school or "",
    )


def _student_values(s: registrar_pb2.Student) -> dict[str, Any]:
    """A ``Student`` message as the flows enroll one (empty optional fields: None)."""
    return {
        "local_id": s.local_id or None,
        "ssid": s.ssid or None,
        "legal_first_name": s.legal_first_name,
        "legal_middle_name": s.legal_middle_name or None,
        "legal_last_name": s.legal_last_name,
        "birth_date": s.birth_date,
        "gender": s.gender or None,
        "school": s.school or None,
    }


def _summary(d: District, r: Any) -> registrar_pb2.RequestSummary:
    out = registrar_pb2.RequestSummary(
        request_id=r.request_id,
        direction=(
            registrar_pb2.OUTBOUND if r.direction == Direction.OUTBOUND else registrar_pb2.INBOUND
        ),
        status=common_pb2.RequestStatus.Value(r.status),
        other_district=r.other_district,
        student_name=" ".join(p for p in (r.legal_first_name, r.legal_last_name) if p),
        ssid=r.ssid or "",
        status_reason=r.status_reason or "",
    )
    out.created_at.FromDatetime(r.created_at)
    out.updated_at.FromDatetime(r.updated_at)
    if r.direction == Direction.INBOUND and r.due_rule:
        out.due_on = r.due_on.isoformat() if r.due_on else ""
        out.due_rule = r.due_rule
        out.due_note = r.due_note or ""
        out.overdue = compliance.is_overdue(d, r)
    return out


def _detail(d: District, request_id: str) -> registrar_pb2.RequestDetail:
    r = lookups.request(d, RequestId(request_id))
    detail = registrar_pb2.RequestDetail(
        summary=_summary(d, r),
        requesting_school=r.requesting_school,
        prior_school=r.prior_school,
        tables=[
            common_pb2.TableCode.Value(t)
            for t in tables.parse_table_list(r.tables_approved or r.tables_requested)
        ],
        local_student_id=r.local_student_id or "",
        reject_reason=(
            common_pb2.RejectReason.Value(r.reject_reason)
            if r.reject_reason
            else common_pb2.REJECT_REASON_UNSPECIFIED
        ),
        reject_text=r.reject_text or "",
        transfer_id=r.transfer_id or "",
        delivery_bytes_total=r.delivery_bytes_total or 0,
        delivery_bytes_done=r.delivery_bytes_done or 0,
        attempts=r.attempts or 0,
        prior_local_id=r.prior_local_id or "",
        approved=bool(r.approved),
        foster_youth=r.foster_youth,
        discipline_records_requested=r.discipline_requested,
        discipline_answer=_DISCIPLINE_ANSWER.get(
            r.discipline_answer or "", common_pb2.DISCIPLINE_ANSWER_UNSPECIFIED
        ),
        grades_withheld=r.grades_withheld,
        held_reason=r.held_reason or "",
        teachers_to_be_informed=(
            r.direction == Direction.OUTBOUND and r.discipline_answer == "SENT"
        ),
    )
    received = lookups.received_counts(d, TransferId(r.transfer_id)) if r.transfer_id else ""
    for table, rows in sorted(parse_counts(received).items()):
        detail.received.add(table=table, rows=rows)
    if r.next_attempt_at:
        detail.next_attempt_at.FromDatetime(r.next_attempt_at)
    for send in lookups.pending_sends(d, RequestId(request_id)):
        pending = detail.pending_sends.add(
            kind=send.kind,
            to_district=send.to_district,
            attempts=send.attempts,
            last_error=send.last_error or "",
            sending=send.sending,
            failed=send.failed,
        )
        pending.next_attempt_at.FromDatetime(send.next_attempt_at)
    return detail


def _row_choice(every: bool, refs: Any) -> review.AcceptConflicts:
    if every:
        return "all"
    return {(tables.table_spec(r.table).code, r.index) for r in refs}


class RegistrarService(ComplianceRpcs, registrar_pb2_grpc.RegistrarServicer):
    def __init__(self, district: District, search_schools: Any) -> None:
        self._d = district
        self._search_schools = search_schools

    def AddStudent(
        self, request: registrar_pb2.AddStudentRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.Student:
        enrolled, warnings = lookups.enroll_student(
            self._d,
            _student_values(request.student),
            list(request.records),
            actor=_actor(request.actor),
        )
        out = _student_proto(enrolled)
        out.warnings.extend(warnings)
        return out

    def ListStudents(
        self, request: registrar_pb2.ListStudentsRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.ListStudentsResponse:
        found = lookups.find_students(self._d, request.query, request.limit or 100)
        return registrar_pb2.ListStudentsResponse(students=[_student_proto(s) for s in found])

    def SearchSchools(
        self, request: registrar_pb2.SchoolQuery, context: grpc.ServicerContext
    ) -> registrar_pb2.SchoolList:
        matches = self._search_schools(request.query, request.limit or 20)
        return registrar_pb2.SchoolList(
            schools=[
                registrar_pb2.SchoolEntry(
                    cds_code=m.cds_code,
                    name=m.name,
                    district_code=m.district_code,
                    district_name=m.district_name,
                )
                for m in matches
            ]
        )

    def CreateRequest(
        self, request: registrar_pb2.CreateRequestRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.RequestDetail:
        request_id = requester.create_request(
            self._d,
            student_local_id=request.student_local_id,
            prior_school=request.prior_school,
            prior_local_id=request.prior_local_id,
            tables=list(request.tables),
            actor=_actor(request.actor),
            foster_youth=request.foster_youth,
            discipline_records_requested=request.discipline_records_requested,
        )
        requester.send_now(self._d, request_id)
        return _detail(self._d, request_id)

    def ListRequests(
        self, request: registrar_pb2.ListRequestsRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.ListRequestsResponse:
        direction = {
            registrar_pb2.OUTBOUND: Direction.OUTBOUND,
            registrar_pb2.INBOUND: Direction.INBOUND,
        }.get(request.direction)
        status = common_pb2.RequestStatus.Name(request.status) if request.status else None
        rows = lookups.find_requests(self._d, direction, status, request.limit or 100)
        return registrar_pb2.ListRequestsResponse(requests=self._summaries(rows))

    def _summaries(self, rows: Any) -> list[registrar_pb2.RequestSummary]:
        out = [_summary(self._d, r) for r in rows]
        shorts = lookups.short_request_ids(self._d, (r.request_id for r in rows))
        for summary in out:
            summary.short_id = shorts[summary.request_id]
        return out

    def _student_detail_of(
        self, local_id: str, actor: str = "unknown"
    ) -> registrar_pb2.StudentDetail:
        out = _student_detail(lookups.student_detail(self._d, local_id, actor))
        out.flags.extend(flag_protos(compliance.flags_of(self._d, local_id)))
        return out

    def GetRequest(
        self, request: registrar_pb2.RequestRef, context: grpc.ServicerContext
    ) -> registrar_pb2.RequestDetail:
        return _detail(self._d, request.request_id)

    def MatchStudent(
        self, request: registrar_pb2.RequestRef, context: grpc.ServicerContext
    ) -> registrar_pb2.MatchCandidates:
        candidates = responder.match_candidates(self._d, RequestId(request.request_id))
        return registrar_pb2.MatchCandidates(
            candidates=[
                registrar_pb2.MatchCandidate(
                    student=_student_proto(lookups.student(self._d, c.local_id)),
                    confidence=c.confidence,
                    exact=c.exact,
                    why=c.why,
                )
                for c in candidates
            ]
        )

    def ApproveRequest(
        self, request: registrar_pb2.ApproveRequestRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.RequestDetail:
        _may_answer(request.actor_role)
        responder.approve_request(
            self._d,
            request_id=RequestId(request.request_id),
            student_local_id=request.student_local_id,
            tables=list(request.tables),
            actor=_actor(request.actor),
            discipline_answer=request.discipline_answer,
        )
        return _detail(self._d, request.request_id)

    def RejectRequest(
        self, request: registrar_pb2.RejectRequestRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.RequestDetail:
        _may_answer(request.actor_role)
        responder.reject_request(
            self._d,
            request_id=RequestId(request.request_id),
            reason=request.reason,
            text=request.text,
            actor=_actor(request.actor),
        )
        return _detail(self._d, request.request_id)

    def RetryRequest(
        self, request: registrar_pb2.RequestRef, context: grpc.ServicerContext
    ) -> registrar_pb2.RequestDetail:
        outcome = requester.retry_request(
            self._d, RequestId(request.request_id), _actor(request.actor)
        )
        detail = _detail(self._d, request.request_id)
        detail.outcome = outcome
        return detail

    def ReviewTransfer(
        self, request: registrar_pb2.RequestRef, context: grpc.ServicerContext
    ) -> registrar_pb2.TransferReview:
        row, by_table = review.review_transfer(self._d, RequestId(request.request_id))
        lookups.record_view(
            self._d,
            _actor(request.actor),
            "records.review",
            row.local_student_id,
            RequestId(row.request_id),
        )
        out = registrar_pb2.TransferReview(
            request_id=row.request_id,
            transfer_id=row.transfer_id or "",
            student_local_id=row.local_student_id or "",
        )
        for code in tables.ALL_TABLES:
            if code not in by_table:
                continue
            spec = tables.table_spec(code)
            tr = out.tables.add(table=spec.enum)
            for item in by_table[code]:
                cls = _ROW_CLASS[str(item.row_class)]
                if cls == registrar_pb2.NEW:
                    tr.new_rows += 1
                elif cls == registrar_pb2.DUPLICATE:
                    tr.duplicate_rows += 1
                else:
                    tr.conflict_rows += 1
                reviewed = tr.rows.add(
                    index=item.index, row_class=cls, differing_columns=list(item.differing_columns)
                )
                if cls == registrar_pb2.CONFLICT and item.existing is not None:
                    reviewed.replaces_sq = item.existing["SQ"]
                reviewed.incoming.table = spec.enum
                getattr(reviewed.incoming, spec.batch_field).append(
                    tables.row_to_proto(spec, item.incoming)
                )
                if item.existing is not None:
                    reviewed.existing.table = spec.enum
                    getattr(reviewed.existing, spec.batch_field).append(
                        tables.row_to_proto(spec, item.existing)
                    )
        return out

    def ImportTransfer(
        self, request: registrar_pb2.ImportTransferRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.ImportResult:
        result = review.import_received_transfer(
            self._d,
            request_id=RequestId(request.request_id),
            accept=_row_choice(request.accept_all_conflicts, request.accept_conflicts),
            keep_both=_row_choice(request.keep_both_all, request.keep_both),
            actor=_actor(request.actor),
        )
        out = registrar_pb2.ImportResult(
            request_id=request.request_id, already_imported=result.already_imported
        )
        # In transfer order (TST, CST, ...), as review and show list them; not by name.
        for code, n in sorted(result.imported.items(), key=lambda c: tables.table_spec(c[0]).enum):
            out.imported.add(table=tables.table_spec(code).enum, rows=n)
        for code, n in sorted(result.skipped.items(), key=lambda c: tables.table_spec(c[0]).enum):
            out.skipped.add(table=tables.table_spec(code).enum, rows=n)
        for code, n in sorted(result.replaced.items(), key=lambda c: tables.table_spec(c[0]).enum):
            out.replaced.add(table=tables.table_spec(code).enum, rows=n)
        return out

    def ListDisclosures(
        self, request: registrar_pb2.ListDisclosuresRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.ListDisclosuresResponse:
        out = registrar_pb2.ListDisclosuresResponse()
        found = lookups.disclosures_of(self._d, request.student_local_id or None)
        shorts = lookups.short_request_ids(self._d, (x.request_id for x in found))
        for x in found:
            item = out.disclosures.add(
                student_local_id=x.student_local_id,
                student_name=x.student_name,
                receiving_district=x.receiving_district,
                receiving_school=x.receiving_school,
                tables=[common_pb2.TableCode.Value(t) for t in tables.parse_table_list(x.tables)],
                request_id=x.request_id,
                legal_basis=x.legal_basis,
                acting_staff=x.acting_staff,
                short_request_id=shorts[x.request_id],
            )
            item.disclosed_at.FromDatetime(x.disclosed_at)
            for code, rows in x.counts or ():
                item.counts.add(table=tables.table_spec(code).enum, rows=rows)
        return out

    def PostMessage(
        self, request: registrar_pb2.PostMessageRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.ThreadEntry:
        message_id = messages.post_message(
            self._d,
            request_id=RequestId(request.request_id),
            body=request.body,
            actor=_actor(request.actor),
        )
        return registrar_pb2.ThreadEntry(
            message_id=message_id, request_id=request.request_id, from_district=self._d.code
        )

    def ListMessages(
        self, request: registrar_pb2.RequestRef, context: grpc.ServicerContext
    ) -> registrar_pb2.ListMessagesResponse:
        out = registrar_pb2.ListMessagesResponse()
        for m in lookups.thread_of(self._d, RequestId(request.request_id)):
            entry = out.messages.add(
                message_id=m.message_id,
                request_id=m.request_id,
                from_district=m.from_district or self._d.code,
                author=m.author,
                body=m.body,
                system=m.system,
                delivered=m.delivered,
            )
            entry.sent_at.FromDatetime(m.sent_at)
        return out

    def GetStudent(
        self, request: registrar_pb2.StudentRef, context: grpc.ServicerContext
    ) -> registrar_pb2.StudentDetail:
        return self._student_detail_of(request.local_id, _actor(request.actor))

    def EditStudent(
        self, request: registrar_pb2.EditStudentRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.Student:
        c = request.changes
        given = {name: getattr(c, name) for name in lookups.EDITABLE_FIELDS if getattr(c, name)}
        clear = [_CLEARABLE_NAMES.get(name, name) for name in request.clear]
        student, warnings = lookups.correct_student(
            self._d, request.local_id, given, clear, actor=_actor(request.actor)
        )
        out = _student_proto(student)
        out.warnings.extend(warnings)
        return out

    def AddStudentRecords(
        self, request: registrar_pb2.AddStudentRecordsRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.StudentDetail:
        detail = lookups.add_student_records(
            self._d, request.local_id, list(request.records), actor=_actor(request.actor)
        )
        return _student_detail(detail)

    def CreateRequests(
        self, request: registrar_pb2.CreateRequestsRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.BatchResult:
        items = [
            batches.CreateItem(
                label=item.label or f"item {n}",
                student_local_id=item.request.student_local_id,
                prior_school=item.request.prior_school,
                prior_local_id=item.request.prior_local_id,
                tables=list(item.request.tables),
                enroll=_student_values(item.enroll) if item.HasField("enroll") else None,
            )
            for n, item in enumerate(request.items, start=1)
        ]
        return self._batch(batches.create_requests(self._d, items, _actor(request.actor)))

    def ApproveExactMatches(
        self, request: registrar_pb2.BatchRef, context: grpc.ServicerContext
    ) -> registrar_pb2.BatchResult:
        _may_answer(request.actor_role)
        return self._batch(batches.approve_exact_matches(self._d, _actor(request.actor)), True)

    def ImportAllNew(
        self, request: registrar_pb2.BatchRef, context: grpc.ServicerContext
    ) -> registrar_pb2.BatchResult:
        return self._batch(batches.import_all_new(self._d, _actor(request.actor)), True)

    def _batch(
        self, outcomes: list[batches.ItemOutcome], label_by_id: bool = False
    ) -> registrar_pb2.BatchResult:
        shorts = lookups.short_request_ids(
            self._d, (o.request_id for o in outcomes if o.request_id)
        )
        out = registrar_pb2.BatchResult()
        for o in outcomes:
            short = shorts.get(o.request_id, "")
            out.items.add(
                label=short if label_by_id and short else o.label,
                request_id=o.request_id,
                short_id=short,
                student_local_id=o.student_local_id,
                outcome=_OUTCOME[o.outcome],
                message=o.message,
                error_code=o.error_code,
            )
        out.done = sum(1 for o in outcomes if o.outcome == "done")
        out.left = sum(1 for o in outcomes if o.outcome == "left")
        out.failed = sum(1 for o in outcomes if o.outcome == "failed")
        return out

    def ListAudit(
        self, request: registrar_pb2.ListAuditRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.ListAuditResponse:
        rid = RequestId(request.request_id) if request.request_id else None
        out = registrar_pb2.ListAuditResponse()
        for entry in lookups.audit_log(self._d, request.limit, rid):
            item = out.entries.add(
                actor=entry.actor,
                action=entry.action,
                request_id=entry.request_id or "",
                student_local_id=entry.student_local_id or "",
                detail=entry.detail,
            )
            item.at.FromDatetime(entry.at)
        return out


_OUTCOME = {
    "done": registrar_pb2.ITEM_DONE,
    "left": registrar_pb2.ITEM_LEFT,
    "failed": registrar_pb2.ITEM_FAILED,
}


# What the CLI may call the fields it can clear.
_CLEARABLE_NAMES = {"middle": "legal_middle_name"}


def _student_detail(detail: lookups.StudentDetail) -> registrar_pb2.StudentDetail:
    out = registrar_pb2.StudentDetail(student=_student_proto(detail.student))
    for code in tables.ALL_TABLES:
        if detail.rows.get(code):
            out.rows.add(table=tables.table_spec(code).enum, rows=detail.rows[code])
    for version in detail.replaced:
        spec = tables.table_spec(version.table)
        item = out.replaced.add(
            replaced_by=version.replaced_by,
            transfer_id=version.transfer_id,
            row_index=version.row_index,
        )
        item.replaced_at.FromDatetime(version.replaced_at)
        item.old.table = spec.enum
        json_format.Parse(version.old_values, getattr(item.old, spec.batch_field).add())
    return out
