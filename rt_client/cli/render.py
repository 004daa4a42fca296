"""How ``rt`` shows the registrar service's answers to a person: tables and detail views.

(``--json`` prints the messages themselves instead: ``Session.emit``.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from protos.rt.v1 import common_pb2, registrar_pb2
from rt_client.cli.review_rows import render_rows

__all__ = [
    "describe_send",
    "render_candidates",
    "render_detail",
    "render_disclosures",
    "render_import",
    "render_messages",
    "render_requests",
    "render_review",
    "render_schools",
    "render_student_detail",
    "render_students",
    "reason_words",
    "status_name",
    "table_names",
    "timestamp",
]


def table_names(codes: Sequence[common_pb2.TableCode.ValueType]) -> str:
    return ",".join(common_pb2.TableCode.Name(c) for c in codes) or "all"


def reason_words(reason: str) -> str:
    """A rejection reason code as words ("STUDENT_NOT_FOUND": "student not found");
    any other reason (a sentence) as it is."""
    if reason in common_pb2.RejectReason.keys():
        return reason.replace("_", " ").lower()
    return reason


def status_name(code: common_pb2.RequestStatus.ValueType) -> str:
    return common_pb2.RequestStatus.Name(code)


def timestamp(ts: Any) -> str:
    if not ts.seconds:
        return ""
    return str(ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"))


def render_students(console: Console, reply: registrar_pb2.ListStudentsResponse) -> None:
    t = Table("local id", "SSID", "name", "birth date", "gender", "school")
    for st in reply.students:
        name = " ".join(
            p for p in (st.legal_first_name, st.legal_middle_name, st.legal_last_name) if p
        )
        t.add_row(st.local_id, st.ssid, name, st.birth_date, st.gender, st.school)
    console.print(t)


def render_student_detail(console: Console, d: registrar_pb2.StudentDetail) -> None:
    """One student; the rows held per table; the old versions of rows an import replaced."""
    st = d.student
    t = Table(show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    name = " ".join(p for p in (st.legal_first_name, st.legal_middle_name, st.legal_last_name) if p)
    for k, v in (
        ("local id", st.local_id),
        ("SSID", st.ssid),
        ("name", name),
        ("birth date", st.birth_date),
        ("gender", st.gender),
        ("school", st.school),
        ("records", ", ".join(f"{common_pb2.TableCode.Name(c.table)} {c.rows}" for c in d.rows)),
    ):
        t.add_row(k, v or "-")
    for f in d.flags:
        t.add_row(
            "flag", f"{_FLAG_WORDS.get(f.flag, f.flag)} (from {f.source}, {timestamp(f.set_at)})"
        )
    console.print(t)
    if d.replaced:
        console.print("Rows replaced at import (their old values):")
        r = Table("replaced", "by", "table", "SQ", "old values", "transfer row")
        for item in d.replaced:
            table = common_pb2.TableCode.Name(item.old.table)
            old = getattr(item.old, table.lower())[0]
            values = json_format.MessageToDict(old, preserving_proto_field_name=True)
            r.add_row(
                timestamp(item.replaced_at),
                item.replaced_by,
                table,
                str(values.pop("sq", "")),
                ", ".join(f"{k.upper()}={v!r}" for k, v in values.items()),
                f"{item.transfer_id} {table}:{item.row_index}",
            )
        console.print(r)


_FLAG_WORDS = {
    "WITHHOLD_GRADES": "WITHHOLD_GRADES: grades withheld (EC 48904.3)",
    "MISSING_CHILD": "MISSING_CHILD: reported missing (EC 49068.6); requests are held",
}


def render_schools(console: Console, reply: registrar_pb2.SchoolList) -> None:
    t = Table("CDS code", "school", "district", "district name")
    for sc in reply.schools:
        t.add_row(sc.cds_code, sc.name, sc.district_code, sc.district_name)
    console.print(t)
    if not reply.schools:
        console.print("No registered school matches.")


def render_requests(console: Console, reply: registrar_pb2.ListRequestsResponse) -> None:
    t = Table("request", "dir", "status", "other district", "student", "updated", "due", "note")
    t.columns[0].no_wrap = True  # a short id is typed back: never cut
    for r in reply.requests:
        t.add_row(
            r.short_id or r.request_id,
            "out" if r.direction == registrar_pb2.OUTBOUND else "in",
            status_name(r.status),
            r.other_district,
            r.student_name,
            timestamp(r.updated_at),
            due_text(r) if r.status == common_pb2.PENDING else "",
            reason_words(r.status_reason),
        )
    console.print(t)


def render_detail(console: Console, d: registrar_pb2.RequestDetail) -> None:
    r = d.summary
    t = Table(show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("request", r.request_id),
        (
            "direction",
            "outbound (we asked)"
            if r.direction == registrar_pb2.OUTBOUND
            else "inbound (we were asked)",
        ),
        (
            "status",
            status_name(r.status)
            + (" (approved, delivering)" if d.approved and r.status == common_pb2.PENDING else ""),
        ),
        ("other district", r.other_district),
        ("student", f"{r.student_name} (SSID {r.ssid})" if r.ssid else r.student_name),
        ("local student id", d.local_student_id),
        ("requesting school", d.requesting_school),
        ("prior school", d.prior_school),
        ("tables", table_names(d.tables)),
        ("created", timestamp(r.created_at)),
        ("updated", timestamp(r.updated_at)),
    ]
    if r.status_reason:
        rows.append(("reason", reason_words(r.status_reason)))
    rows.extend(_compliance_rows(d))
    if d.reject_reason:
        rows.append(
            (
                "rejected",
                reason_words(common_pb2.RejectReason.Name(d.reject_reason))
                + (f": {d.reject_text}" if d.reject_text else ""),
            )
        )
    if d.transfer_id:
        rows.append(("transfer", d.transfer_id))
    if d.received:
        rows.append(
            (
                "rows",
                ", ".join(f"{common_pb2.TableCode.Name(c.table)} {c.rows}" for c in d.received),
            )
        )
    if d.attempts:
        rows.append(("delivery attempts", str(d.attempts)))
    now = dt.datetime.now(dt.UTC)
    for send in d.pending_sends:
        rows.append(("failed send" if send.failed else "waiting send", describe_send(send, now)))
    if d.outcome:
        rows.append(("done", d.outcome))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


def due_text(r: registrar_pb2.RequestSummary) -> str:
    """ "2026-10-20 (EC 49068)", "OVERDUE ...", "waiting (EC 49068)" (summer), or ""."""
    if not r.due_rule:
        return ""
    if not r.due_on:
        return f"waiting ({r.due_rule})"
    return f"{'OVERDUE ' if r.overdue else ''}{r.due_on} ({r.due_rule})"


_ANSWERS = {
    common_pb2.DISCIPLINE_RECORDS_SENT: "sent (there are some)",
    common_pb2.DISCIPLINE_NONE_ON_FILE: "none on file",
}


def _compliance_rows(d: registrar_pb2.RequestDetail) -> list[tuple[str, str]]:
    """Due date, foster youth, discipline records (EC 48201(b)), withheld grades, hold."""
    r = d.summary
    rows: list[tuple[str, str]] = []
    if r.due_rule:
        rows.append(("due", due_text(r) + (f": {r.due_note}" if r.due_note else "")))
    if d.foster_youth:
        rows.append(("foster youth", "yes (EC 49069.5: 2 business days; no hold may block)"))
    if d.discipline_records_requested:
        answer = _ANSWERS.get(d.discipline_answer, "not answered yet")
        rows.append(("suspension/expulsion records", f"asked (EC 48201(b)); answer: {answer}"))
    if d.teachers_to_be_informed:
        rows.append(
            ("teachers", "inform the student's teachers of the suspension/expulsion records")
        )
    if d.grades_withheld:
        rows.append(("grades withheld", "yes (EC 48904.3): keep withholding them"))
    if d.held_reason:
        rows.append(("HELD", d.held_reason))
    return rows


def describe_send(send: registrar_pb2.PendingSend, now: dt.datetime) -> str:
    """One waiting send for a registrar: to whom, why it waits, when it is tried next.

    E.g. "delivery to district 3768338: district 3768338 could not be reached
    (UNAVAILABLE); next attempt in 8 s (14:02:11)".
    """
    what = f"{send.kind.replace('_', ' ')} to district {send.to_district}"
    # The server's reasons say "the other district": name it.
    error = send.last_error.replace("the other district", f"district {send.to_district}")
    if send.failed:
        return f"{what}: gave up after {send.attempts} attempts: {error} ('rt retry' starts over)"
    if send.sending:
        return f"{what}: sending now (attempt {send.attempts + 1})"
    due = send.next_attempt_at.ToDatetime(tzinfo=dt.UTC)
    seconds = int((due - now).total_seconds() + 0.999)
    when = (
        f"next attempt in {seconds} s ({due.astimezone().strftime('%H:%M:%S')})"
        if seconds > 0
        else "next attempt now"
    )
    if not send.attempts:
        return f"{what}: queued; {when}"
    return f"{what}: {error}; {when}" if error else f"{what}: {when}"


def render_candidates(console: Console, reply: registrar_pb2.MatchCandidates) -> None:
    t = Table("local id", "SSID", "name", "birth date", "confidence", "why")
    for c in reply.candidates:
        st = c.student
        t.add_row(
            st.local_id,
            st.ssid,
            f"{st.legal_first_name} {st.legal_last_name}",
            st.birth_date,
            f"{c.confidence}%" + (" exact" if c.exact else ""),
            c.why,
        )
    console.print(t)
    if not reply.candidates:
        console.print("No local student matches; consider 'rt reject --reason student-not-found'.")


def render_review(console: Console, reply: registrar_pb2.TransferReview, rows: str | None) -> None:
    """The review's counts per table; with ``rows`` ("changed" or "all"), the rows too."""
    t = Table("table", "new", "duplicate", "conflict")
    for tr in reply.tables:
        t.add_row(
            common_pb2.TableCode.Name(tr.table),
            str(tr.new_rows),
            str(tr.duplicate_rows),
            str(tr.conflict_rows),
        )
    console.print(t)
    if rows:
        render_rows(console, reply, rows)
    conflicts = sum(tr.conflict_rows for tr in reply.tables)
    if conflicts:
        console.print(
            f"{conflicts} conflicting row(s) are skipped unless you choose: "
            "'rt import ID --accept-conflicts TABLE:INDEX' replaces our row with the received "
            "one (our old values are kept and shown by 'rt student show'); "
            "'--keep-both TABLE:INDEX' adds it beside ours.",
            markup=False,
        )


def render_import(console: Console, reply: registrar_pb2.ImportResult) -> None:
    if reply.already_imported:
        console.print("Already imported; nothing changed.")
    t = Table("table", "imported", "replaced", "skipped")
    imported = {c.table: c.rows for c in reply.imported}
    replaced = {c.table: c.rows for c in reply.replaced}
    skipped = {c.table: c.rows for c in reply.skipped}
    for table in sorted(imported.keys() | replaced.keys() | skipped.keys()):
        t.add_row(
            common_pb2.TableCode.Name(table),
            str(imported.get(table, 0)),
            str(replaced.get(table, 0)),
            str(skipped.get(table, 0)),
        )
    console.print(t)


def render_disclosures(console: Console, reply: registrar_pb2.ListDisclosuresResponse) -> None:
    t = Table(
        "date",
        "student",
        "to district",
        "to school",
        "rows sent",
        "request",
        "staff",
        "legal basis",
    )
    # Codes and ids are read and typed back: never cut (the prose columns fold instead).
    for column in (t.columns[2], t.columns[3], t.columns[5]):
        column.no_wrap = True
    for d in reply.disclosures:
        t.add_row(
            timestamp(d.disclosed_at),
            f"{d.student_local_id} {d.student_name}",
            d.receiving_district,
            d.receiving_school,
            _disclosed(d),
            d.short_request_id or d.request_id,
            d.acting_staff,
            d.legal_basis,
        )
    console.print(t)


def _disclosed(d: registrar_pb2.Disclosure) -> str:
    """What was sent: "HIS 2, ENR 1" (older entries, without counts: the table list)."""
    if d.counts:
        return ", ".join(f"{common_pb2.TableCode.Name(c.table)} {c.rows}" for c in d.counts)
    return table_names(d.tables) if d.tables else "no rows"


def render_messages(console: Console, listing: registrar_pb2.ListMessagesResponse) -> None:
    for m in listing.messages:
        who = "system" if m.system else f"{m.author} ({m.from_district})"
        console.print(f"[dim]{timestamp(m.sent_at)}[/dim] [bold]{who}[/bold]: ", end="")
        console.print(m.body, markup=False)
