"""The console's pages: dashboard, requests (create, inbound, outbound, review), thread, log.

Each handler reads or changes the district through the Registrar service, as
the ``rt`` commands do, with the logged-in staff member as the ``actor``. The
role was checked before a change handler runs (``app.permits``); a handler
checks only what depends on the request itself (its direction).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import Response

from protos.rt.v1 import common_pb2, registrar_pb2
from rt_client.cli.batches import MAX_CSV_BYTES, parse_request_csv
from rt_client.cli.render import timestamp
from rt_client.cli.session import CliError
from rt_client.column_names import column_name
from rt_client.console.web import WebSession

if TYPE_CHECKING:
    from rt_client.console.app import ConsoleApp

__all__ = ["Pages"]

STATUSES: Final = [n for n in common_pb2.RequestStatus.keys() if n != "REQUEST_STATUS_UNSPECIFIED"]
TABLES: Final = [n for n in common_pb2.TableCode.keys() if n != "TABLE_CODE_UNSPECIFIED"]
REASONS: Final = [n for n in common_pb2.RejectReason.keys() if n != "REJECT_REASON_UNSPECIFIED"]
_CLASS: Final = {
    registrar_pb2.NEW: "NEW",
    registrar_pb2.DUPLICATE: "DUPLICATE",
    registrar_pb2.CONFLICT: "CONFLICT",
}
_OUTCOME: Final = {
    registrar_pb2.ITEM_DONE: "done",
    registrar_pb2.ITEM_LEFT: "left",
    registrar_pb2.ITEM_FAILED: "FAILED",
}
# Where a row sits and where it came from, not what it says: not compared, not shown.
_BOOKKEEPING: Final = frozenset({"pid", "sq", "src"})
_LIST_LIMIT: Final = 500
_UNREAD_SCAN: Final = 50  # the most recent requests whose threads the dashboard counts
_CSV_RISKY: Final = ("=", "+", "-", "@", "\t", "\r")


def _status(code: int) -> str:
    return common_pb2.RequestStatus.Name(code)  # type: ignore[arg-type]


def _summary(s: registrar_pb2.RequestSummary) -> dict[str, Any]:
    return {
        "id": s.request_id,
        "short": s.short_id or s.request_id[:8],
        "direction": "inbound" if s.direction == registrar_pb2.INBOUND else "outbound",
        "status": _status(s.status),
        "other": s.other_district,
        "student": s.student_name,
        "ssid": s.ssid,
        "updated": timestamp(s.updated_at),
        "reason": s.status_reason,
    }


def _row_values(batch: Any, table: str) -> dict[str, str]:
    rows = getattr(batch, table.lower(), None)
    if not rows:
        return {}
    data = json_format.MessageToDict(rows[0], preserving_proto_field_name=True)
    return {k: str(v) for k, v in data.items()}


class Pages:
    def __init__(self, app: ConsoleApp) -> None:
        self.app = app

    # --- dashboard ----------------------------------------------------------------------------

    async def dashboard(self, request: Request, ws: WebSession) -> Response:
        assert ws.staff is not None
        listing = await self.app.rpc(
            "ListRequests", registrar_pb2.ListRequestsRequest(limit=_LIST_LIMIT)
        )
        rows = [_summary(s) for s in listing.requests]
        counts = {
            d: Counter(r["status"] for r in rows if r["direction"] == d)
            for d in ("inbound", "outbound")
        }
        role = ws.staff.role
        waiting = [
            r
            for r in rows
            if (
                role in ("requester", "admin")
                and r["direction"] == "outbound"
                and r["status"] == "DATA_RECEIVED"
            )
            or (
                role in ("responder", "admin")
                and r["direction"] == "inbound"
                and r["status"] == "PENDING"
            )
        ]
        seen = self.app.staff.seen(ws.staff.username)
        for r in rows[:_UNREAD_SCAN]:
            thread = await self.app.rpc(
                "ListMessages", registrar_pb2.RequestRef(request_id=r["id"])
            )
            people = [m for m in thread.messages if not m.system]
            r["unread"] = max(0, len(people) - seen.get(r["id"], 0))
        unread = [r for r in rows[:_UNREAD_SCAN] if r.get("unread")]
        return self.app.render(
            request,
            ws,
            "dashboard.html",
            counts=counts,
            statuses=STATUSES,
            waiting=waiting,
            unread=unread,
            recent=rows[:_UNREAD_SCAN],
        )

    # --- creating a request -------------------------------------------------------------------

    async def new_request_form(self, request: Request, ws: WebSession) -> Response:
        query = request.query_params.get("q", "")[:100]
        students = await self.app.rpc(
            "ListStudents", registrar_pb2.ListStudentsRequest(query=query, limit=100)
        )
        school_q = request.query_params.get("school", "")[:100].strip()
        schools: list[Any] = []
        school_problem = ""
        if school_q:  # the registry's directory is searched only for something typed
            try:
                found = await self.app.rpc(
                    "SearchSchools", registrar_pb2.SchoolQuery(query=school_q, limit=100)
                )
                schools = list(found.schools)
            except CliError as exc:
                school_problem = str(exc)
        return self.app.render(
            request,
            ws,
            "new_request.html",
            students=students.students,
            schools=schools,
            school_problem=school_problem,
            tables=TABLES,
            q=query,
            school_q=school_q,
        )

    async def create_request(self, request: Request, ws: WebSession) -> Response:
        assert ws.staff is not None
        form = request.state.form
        tables = [common_pb2.TableCode.Value(t) for t in form.getlist("tables") if t in TABLES]
        detail = await self.app.rpc(
            "CreateRequest",
            registrar_pb2.CreateRequestRequest(
                student_local_id=str(form.get("student", "")),
                prior_school=str(form.get("prior_school", "")),
                prior_local_id=str(form.get("prior_local_id", ""))[:64],
                tables=tables,
                actor=ws.staff.username,
            ),
        )
        ws.flash.append(("ok", "Request created and sent to the prior district."))
        return self.app.redirect(ws, f"/requests/{detail.summary.request_id}")

    # --- one request --------------------------------------------------------------------------

    async def _detail(self, rid: str, ws: WebSession) -> registrar_pb2.RequestDetail:
        assert ws.staff is not None
        detail: registrar_pb2.RequestDetail = await self.app.rpc(
            "GetRequest", registrar_pb2.RequestRef(request_id=rid, actor=ws.staff.username)
        )
        return detail

    async def request_page(self, request: Request, ws: WebSession) -> Response:
        assert ws.staff is not None
        rid = request.path_params["rid"]
        detail = await self._detail(rid, ws)
        rid = detail.summary.request_id
        summary = _summary(detail.summary)
        candidates: list[Any] = []
        can_decide = (
            summary["direction"] == "inbound"
            and summary["status"] == "PENDING"
            and not detail.approved
        )
        if can_decide:
            found = await self.app.rpc("MatchStudent", registrar_pb2.RequestRef(request_id=rid))
            candidates = list(found.candidates)
        thread = await self.app.rpc("ListMessages", registrar_pb2.RequestRef(request_id=rid))
        timeline = [m for m in thread.messages if m.system]
        people = [m for m in thread.messages if not m.system]
        seen = self.app.staff.seen(ws.staff.username).get(rid, 0)
        self.app.staff.mark_seen(ws.staff.username, rid, len(people))
        return self.app.render(
            request,
            ws,
            "request.html",
            r=summary,
            d=detail,
            candidates=candidates,
            can_decide=can_decide,
            timeline=timeline,
            people=people,
            seen=seen,
            reasons=REASONS,
            stamp=timestamp,
            tables=", ".join(common_pb2.TableCode.Name(t) for t in detail.tables) or "all",
            received=[(common_pb2.TableCode.Name(c.table), c.rows) for c in detail.received],
        )

    async def approve(self, request: Request, ws: WebSession) -> Response:
        assert ws.staff is not None
        rid = request.path_params["rid"]
        form = request.state.form
        await self.app.rpc(
            "ApproveRequest",
            registrar_pb2.ApproveRequestRequest(
                request_id=rid,
                student_local_id=str(form.get("student", "")),
                actor=ws.staff.username,
                actor_role=ws.staff.role,
            ),
        )
        ws.flash.append(("ok", "Approved: the records are being sent."))
        return self.app.redirect(ws, f"/requests/{rid}")

    async def reject(self, request: Request, ws: WebSession) -> Response:
        assert ws.staff is not None
        rid = request.path_params["rid"]
        form = request.state.form
        reason = str(form.get("reason", ""))
        if reason not in REASONS:
            from rt_client.console.app import Refused

            raise Refused(400, "Choose a reason for the rejection: nothing was changed.")
        await self.app.rpc(
            "RejectRequest",
            registrar_pb2.RejectRequestRequest(
                request_id=rid,
                reason=common_pb2.RejectReason.Value(reason),
                text=str(form.get("text", ""))[:2000],
                actor=ws.staff.username,
                actor_role=ws.staff.role,
            ),
        )
        ws.flash.append(("ok", "Rejected: the requesting district is told why."))
        return self.app.redirect(ws, f"/requests/{rid}")

    async def post_message(self, request: Request, ws: WebSession) -> Response:
        assert ws.staff is not None
        from rt_client.console.app import Refused, permits

        rid = request.path_params["rid"]
        detail = await self._detail(rid, ws)
        inbound = detail.summary.direction == registrar_pb2.INBOUND
        if not permits(ws.staff.role, "message-in" if inbound else "message-out"):
            raise Refused(
                403,
                f"Your role ({ws.staff.role}) may not write in the thread of an "
                f"{'inbound' if inbound else 'outbound'} request: nothing was changed.",
            )
        body = str(request.state.form.get("body", "")).strip()
        if not body:
            raise Refused(400, "The message is empty: nothing was sent.")
        await self.app.rpc(
            "PostMessage",
            registrar_pb2.PostMessageRequest(request_id=rid, body=body, actor=ws.staff.username),
        )
        ws.flash.append(("ok", "Message sent."))
        return self.app.redirect(ws, f"/requests/{detail.summary.request_id}#thread")

    # --- review and import --------------------------------------------------------------------

    async def review_page(self, request: Request, ws: WebSession) -> Response:
        assert ws.staff is not None
        rid = request.path_params["rid"]
        review = await self.app.rpc(
            "ReviewTransfer", registrar_pb2.RequestRef(request_id=rid, actor=ws.staff.username)
        )
        tables = []
        for tr in review.tables:
            name = common_pb2.TableCode.Name(tr.table)
            rows = []
            for row in tr.rows:
                incoming = _row_values(row.incoming, name)
                ours = _row_values(row.existing, name)
                differing = {c.lower() for c in row.differing_columns}
                fields = [
                    (
                        f.upper(),
                        column_name(name, f),
                        ours.get(f, ""),
                        incoming.get(f, ""),
                        f in differing,
                    )
                    for f in dict.fromkeys([*incoming, *ours])
                    if f not in _BOOKKEEPING
                ]
                rows.append(
                    {
                        "index": row.index,
                        "cls": _CLASS.get(row.row_class, "?"),
                        "fields": fields,
                        "replaces": row.replaces_sq,
                    }
                )
            tables.append(
                {
                    "name": name,
                    "new": tr.new_rows,
                    "dup": tr.duplicate_rows,
                    "conflict": tr.conflict_rows,
                    "rows": rows,
                }
            )
        return self.app.render(
            request, ws, "review.html", rid=rid, tables=tables, detail=await self._detail(rid, ws)
        )

    async def import_(self, request: Request, ws: WebSession) -> Response:
        assert ws.staff is not None
        rid = request.path_params["rid"]
        form = request.state.form
        accept, both = [], []
        for key, value in form.multi_items():
            if not key.startswith("conflict-"):
                continue
            table, _, index = key.removeprefix("conflict-").partition("-")
            if table not in TABLES or not index.isdigit():
                continue
            ref = registrar_pb2.RowRef(table=common_pb2.TableCode.Value(table), index=int(index))
            if value == "theirs":
                accept.append(ref)
            elif value == "both":
                both.append(ref)
        result = await self.app.rpc(
            "ImportTransfer",
            registrar_pb2.ImportTransferRequest(
                request_id=rid, accept_conflicts=accept, keep_both=both, actor=ws.staff.username
            ),
        )
        done = sum(c.rows for c in result.imported)
        ws.flash.append(("ok", f"Imported {done} row(s)."))
        return self.app.redirect(ws, f"/requests/{rid}")

    # --- batch actions (as rt approve --all-exact, rt import --all-new) ------------------------

    async def create_from_csv(self, request: Request, ws: WebSession) -> Response:
        """As ``rt request create --from-csv``: the same file, checked the same way (a file
        that is not such a CSV is refused whole, nothing sent), one request per line."""
        assert ws.staff is not None
        from rt_client.console.app import Refused

        upload = request.state.form.get("csv")
        if upload is None or isinstance(upload, str) or not upload.filename:
            raise Refused(400, "Choose a CSV file of students to request: nothing was sent.")
        data = await upload.read(MAX_CSV_BYTES + 1)
        name = upload.filename[:80]
        try:
            items = parse_request_csv(data, name)
        except CliError as exc:
            raise Refused(400, f"{exc}. Nothing was sent.") from None
        result = await self.app.rpc(
            "CreateRequests",
            registrar_pb2.CreateRequestsRequest(items=items, actor=ws.staff.username),
        )
        return self._batch_page(request, ws, f"Requests from {name}", result)

    async def approve_exact(self, request: Request, ws: WebSession) -> Response:
        assert ws.staff is not None
        result = await self.app.rpc(
            "ApproveExactMatches",
            registrar_pb2.BatchRef(actor=ws.staff.username, actor_role=ws.staff.role),
        )
        return self._batch_page(request, ws, "Approve all exact matches", result)

    async def import_all_new(self, request: Request, ws: WebSession) -> Response:
        assert ws.staff is not None
        result = await self.app.rpc("ImportAllNew", registrar_pb2.BatchRef(actor=ws.staff.username))
        return self._batch_page(request, ws, "Import all transfers with only new rows", result)

    def _batch_page(
        self, request: Request, ws: WebSession, title: str, result: registrar_pb2.BatchResult
    ) -> Response:
        items = [
            {
                "label": i.label,
                "short": i.short_id or i.request_id[:8],
                "id": i.request_id,
                "student": i.student_local_id,
                "outcome": _OUTCOME.get(i.outcome, "?"),
                "message": i.message,
            }
            for i in result.items
        ]
        return self.app.render(
            request,
            ws,
            "batch.html",
            title=title,
            items=items,
            done=result.done,
            left=result.left,
            failed=result.failed,
        )

    # --- the disclosure log -------------------------------------------------------------------

    async def _disclosures(self) -> list[dict[str, str]]:
        reply = await self.app.rpc("ListDisclosures", registrar_pb2.ListDisclosuresRequest())
        return [
            {
                "when": timestamp(d.disclosed_at),
                "student": d.student_name,
                "local_id": d.student_local_id,
                "district": d.receiving_district,
                "school": d.receiving_school,
                "tables": ", ".join(
                    f"{common_pb2.TableCode.Name(c.table)} {c.rows}" for c in d.counts
                )
                or ", ".join(common_pb2.TableCode.Name(t) for t in d.tables),
                "basis": d.legal_basis,
                "staff": d.acting_staff,
                "request": d.short_request_id or d.request_id[:8],
            }
            for d in reply.disclosures
        ]

    async def disclosures(self, request: Request, ws: WebSession) -> Response:
        return self.app.render(request, ws, "disclosures.html", rows=await self._disclosures())

    async def disclosures_csv(self, request: Request, ws: WebSession) -> Response:
        rows = await self._disclosures()
        out = io.StringIO()
        writer = csv.writer(out)
        columns = [
            "when",
            "student",
            "local_id",
            "district",
            "school",
            "tables",
            "basis",
            "staff",
            "request",
        ]
        writer.writerow(columns)
        for row in rows:
            # A cell a spreadsheet would run as a formula is written as text (CSV injection).
            writer.writerow(
                ["'" + v if v.startswith(_CSV_RISKY) else v for v in (row[c] for c in columns)]
            )
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="disclosures.csv"'},
        )

    # --- the audit log (admin) ----------------------------------------------------------------

    async def audit(self, request: Request, ws: WebSession) -> Response:
        reply = await self.app.rpc("ListAudit", registrar_pb2.ListAuditRequest(limit=500))
        rows = [
            {
                "at": timestamp(e.at),
                "actor": e.actor,
                "action": e.action,
                "request": e.request_id,
                "student": e.student_local_id,
                "detail": e.detail,
            }
            for e in reply.entries
        ]
        return self.app.render(request, ws, "audit.html", rows=rows)
