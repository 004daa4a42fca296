"""The registrar's commands: students, schools, requests, review, import, disclosures, messages.

Each ``cmd_*`` makes one or two calls to the district's local ``Registrar``
service (``Session.call``) and shows the answer (``rt_client.cli.render``, or
JSON with ``--json``). ``add_registrar_commands`` mounts them on ``rt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from protos.rt.v1 import common_pb2, records_pb2, registrar_pb2
from rt_client.cli import arguments, batches, render, waiting
from rt_client.cli.compliance import cmd_student_flag
from rt_client.cli.records_file import read_records_file
from rt_client.cli.session import (
    DIRECTIONS,
    EXIT_OK,
    REASONS,
    STUDENT_FIELDS,
    TABLE_NAMES,
    CliError,
    Session,
)

__all__ = ["add_registrar_commands"]

_DISCIPLINE_ANSWERS = {
    "": common_pb2.DISCIPLINE_ANSWER_UNSPECIFIED,
    "sent": common_pb2.DISCIPLINE_RECORDS_SENT,
    "none-on-file": common_pb2.DISCIPLINE_NONE_ON_FILE,
}
_REQUEST_ID_HELP = "the request's id, or its first 8 or more characters (as 'rt requests' shows it)"


def _tables(text: str | None) -> list[common_pb2.TableCode.ValueType]:
    if not text:
        return []
    out = []
    for name in text.replace(" ", "").upper().split(","):
        if name not in TABLE_NAMES:
            raise CliError(f"unknown table {name!r}; tables are {', '.join(TABLE_NAMES)}")
        out.append(common_pb2.TableCode.Value(name))
    return out


def cmd_student_add(s: Session) -> int:
    a = s.args
    student = registrar_pb2.Student(
        local_id=a.local_id or "",
        ssid=a.ssid or "",
        legal_first_name=a.first,
        legal_middle_name=a.middle or "",
        legal_last_name=a.last,
        birth_date=a.birth_date,
        gender=a.gender,
        school=a.school,
    )
    batches: list[records_pb2.RecordBatch] = []
    if a.records:
        batches = _read_records_file(Path(a.records))
    reply = s.call(
        "AddStudent",
        registrar_pb2.AddStudentRequest(student=student, records=batches, actor=s.actor),
    )
    s.emit(reply, lambda: s.console.print(f"Enrolled student [bold]{reply.local_id}[/bold]."))
    _warn(s, reply.warnings)
    return EXIT_OK


def _warn(s: Session, warnings: Any) -> None:
    """Warnings go to stderr (with --json too), so scripts see them and the output stays JSON."""
    for warning in warnings:
        s.err.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)


def cmd_student_show(s: Session) -> int:
    reply = s.call("GetStudent", registrar_pb2.StudentRef(local_id=s.args.local_id, actor=s.actor))
    s.emit(reply, lambda: render.render_student_detail(s.console, reply))
    return EXIT_OK


# ``rt student edit`` options -> Student fields.
_EDIT_OPTIONS = STUDENT_FIELDS


def cmd_student_edit(s: Session) -> int:
    a = s.args
    changes = registrar_pb2.Student()
    for option, field in _EDIT_OPTIONS.items():
        value = getattr(a, option)
        if value is not None:
            if not value.strip():
                raise CliError(
                    f"--{option.replace('_', '-')} is empty; to remove a value use --clear"
                )
            setattr(changes, field, value)
    clear = [_EDIT_OPTIONS[name] for name in a.clear or []]
    if not changes.ListFields() and not clear:
        raise CliError(
            "nothing to change: give the fields to correct, e.g. --last Nuñez --birth-date "
            "2011-04-02 (see 'rt student edit --help')"
        )
    reply = s.call(
        "EditStudent",
        registrar_pb2.EditStudentRequest(
            local_id=a.local_id, changes=changes, clear=clear, actor=s.actor
        ),
    )
    s.emit(reply, lambda: s.console.print(f"Corrected student [bold]{reply.local_id}[/bold]."))
    _warn(s, reply.warnings)
    return EXIT_OK


def cmd_student_records(s: Session) -> int:
    a = s.args
    batches = _read_records_file(Path(a.records))
    reply = s.call(
        "AddStudentRecords",
        registrar_pb2.AddStudentRecordsRequest(local_id=a.local_id, records=batches, actor=s.actor),
    )
    s.emit(reply, lambda: render.render_student_detail(s.console, reply))
    return EXIT_OK


def _read_records_file(path: Path) -> list[records_pb2.RecordBatch]:
    """Records as JSON: a list of RecordBatch objects in protobuf's JSON form."""
    return read_records_file(path)


def cmd_student_list(s: Session) -> int:
    reply = s.call(
        "ListStudents",
        registrar_pb2.ListStudentsRequest(query=s.args.query or "", limit=s.args.limit),
    )
    s.emit(list(reply.students), lambda: render.render_students(s.console, reply))
    return EXIT_OK


def cmd_schools_search(s: Session) -> int:
    reply = s.call(
        "SearchSchools", registrar_pb2.SchoolQuery(query=s.args.query, limit=s.args.limit)
    )
    s.emit(list(reply.schools), lambda: render.render_schools(s.console, reply))
    return EXIT_OK


def cmd_request_create(s: Session) -> int:
    a = s.args
    if a.from_csv:
        return batches.cmd_request_create_csv(s)
    if not a.student or not a.prior_school:
        raise CliError(
            "give the student and the prior school (--student ID --prior-school CDS), "
            "or a CSV file of them (--from-csv FILE)"
        )
    reply = s.call(
        "CreateRequest",
        registrar_pb2.CreateRequestRequest(
            student_local_id=a.student,
            prior_school=a.prior_school,
            prior_local_id=a.prior_local_id or "",
            tables=_tables(a.tables),
            actor=s.actor,
            foster_youth=a.foster_youth,
            discipline_records_requested=a.discipline_records,
        ),
    )
    s.emit(reply, lambda: render.render_detail(s.console, reply))
    return EXIT_OK


def cmd_requests(s: Session) -> int:
    a = s.args
    status: common_pb2.RequestStatus.ValueType = common_pb2.REQUEST_STATUS_UNSPECIFIED
    if a.status:
        try:
            status = common_pb2.RequestStatus.Value(a.status.upper())
        except ValueError as exc:
            raise CliError(f"unknown status {a.status!r}") from exc
    reply = s.call(
        "ListRequests",
        registrar_pb2.ListRequestsRequest(
            direction=DIRECTIONS.get(a.direction or "", registrar_pb2.DIRECTION_UNSPECIFIED),
            status=status,
            limit=a.limit,
        ),
    )
    s.emit(list(reply.requests), lambda: render.render_requests(s.console, reply))
    return EXIT_OK


def cmd_show(s: Session) -> int:
    reply = s.call(
        "GetRequest", registrar_pb2.RequestRef(request_id=s.args.request_id, actor=s.actor)
    )
    s.emit(reply, lambda: render.render_detail(s.console, reply))
    return EXIT_OK


def cmd_match(s: Session) -> int:
    reply = s.call(
        "MatchStudent", registrar_pb2.RequestRef(request_id=s.args.request_id, actor=s.actor)
    )
    s.emit(list(reply.candidates), lambda: render.render_candidates(s.console, reply))
    return EXIT_OK


def cmd_approve(s: Session) -> int:
    a = s.args
    if a.all_exact:
        return batches.cmd_approve_all_exact(s)
    if not a.request_id:
        raise CliError("give the request to approve (or --all-exact for every exact match)")
    if a.wait:
        # Approved already (e.g. waiting was stopped with Ctrl-C): follow it again.
        followed = waiting.reattach(s, a.request_id)
        if followed is not None:
            return followed
    reply = s.call(
        "ApproveRequest",
        registrar_pb2.ApproveRequestRequest(
            request_id=a.request_id,
            student_local_id=a.student or "",
            tables=_tables(a.tables),
            actor=s.actor,
            discipline_answer=_DISCIPLINE_ANSWERS[a.discipline_records or ""],
        ),
    )
    if a.wait:
        return waiting.wait_for_delivery(s, reply)
    s.emit(reply, lambda: render.render_detail(s.console, reply))
    return EXIT_OK


def cmd_reject(s: Session) -> int:
    a = s.args
    if a.reason == "other" and not (a.text or "").strip():
        raise CliError(
            "a rejection with --reason other needs an explanation for the other registrar: "
            'add --text "..."'
        )
    reply = s.call(
        "RejectRequest",
        registrar_pb2.RejectRequestRequest(
            request_id=a.request_id, reason=REASONS[a.reason], text=a.text or "", actor=s.actor
        ),
    )
    s.emit(reply, lambda: render.render_detail(s.console, reply))
    return EXIT_OK


def cmd_retry(s: Session) -> int:
    reply = s.call(
        "RetryRequest", registrar_pb2.RequestRef(request_id=s.args.request_id, actor=s.actor)
    )

    def show() -> None:
        s.console.print(reply.outcome, markup=False, highlight=False)
        render.render_detail(s.console, reply)

    s.emit(reply, show)
    return EXIT_OK


def cmd_review(s: Session) -> int:
    reply = s.call(
        "ReviewTransfer", registrar_pb2.RequestRef(request_id=s.args.request_id, actor=s.actor)
    )
    s.emit(reply, lambda: render.render_review(s.console, reply, s.args.rows))
    return EXIT_OK


def _row_refs(option: str, text: str | None) -> tuple[bool, list[registrar_pb2.RowRef]]:
    """``'all'`` or ``TABLE:INDEX,...`` (as ``rt review --rows`` shows them): (all?, rows)."""
    if not text:
        return False, []
    if text.strip().lower() == "all":
        return True, []
    refs = []
    for item in text.split(","):
        name, _, index = item.strip().partition(":")
        if name.upper() not in TABLE_NAMES or not index.isdigit() or len(index) > 9:
            raise CliError(
                f"{option} takes 'all' or TABLE:INDEX,... as 'rt review --rows' shows them "
                f"(e.g. HIS:0); got {item!r}"
            )
        table = common_pb2.TableCode.Value(name.upper())
        refs.append(registrar_pb2.RowRef(table=table, index=int(index)))
    return False, refs


def cmd_import(s: Session) -> int:
    a = s.args
    if a.all_new:
        return batches.cmd_import_all_new(s)
    if not a.request_id:
        raise CliError("give the request to import (or --all-new for every all-new transfer)")
    accept_all, refs = _row_refs("--accept-conflicts", a.accept_conflicts)
    keep_all, keep = _row_refs("--keep-both", a.keep_both)
    columns = [TextColumn("importing"), BarColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=s.err, disable=s.json, transient=True) as bar:
        bar.add_task("import", total=None)
        reply = s.call(
            "ImportTransfer",
            registrar_pb2.ImportTransferRequest(
                request_id=a.request_id,
                accept_conflicts=refs,
                accept_all_conflicts=accept_all,
                actor=s.actor,
                keep_both=keep,
                keep_both_all=keep_all,
            ),
        )
    s.emit(reply, lambda: render.render_import(s.console, reply))
    return EXIT_OK


def cmd_disclosures(s: Session) -> int:
    reply = s.call(
        "ListDisclosures",
        registrar_pb2.ListDisclosuresRequest(student_local_id=s.args.student or ""),
    )
    s.emit(list(reply.disclosures), lambda: render.render_disclosures(s.console, reply))
    return EXIT_OK


def cmd_message(s: Session) -> int:
    a = s.args
    if a.text:
        reply = s.call(
            "PostMessage",
            registrar_pb2.PostMessageRequest(request_id=a.request_id, body=a.text, actor=s.actor),
        )
        s.emit(reply, lambda: s.console.print("Message sent."))
        return EXIT_OK
    listing = s.call(
        "ListMessages", registrar_pb2.RequestRef(request_id=a.request_id, actor=s.actor)
    )
    s.emit(list(listing.messages), lambda: render.render_messages(s.console, listing))
    return EXIT_OK


# --- parser -------------------------------------------------------------------


def add_registrar_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Mount the registrar's commands on ``rt``'s subparsers (``func`` takes a ``Session``)."""
    st = sub.add_parser("student", help="students enrolled in this district")
    st_sub = st.add_subparsers(dest="student_command", required=True, metavar="ACTION")
    sa = st_sub.add_parser(
        "add", parents=[common], help="enroll a student locally (demographics, optional records)"
    )
    sa.add_argument("--local-id", help="local student id (default: assigned)")
    sa.add_argument("--ssid", help="statewide student id (10 digits)")
    sa.add_argument("--first", required=True, help="legal first name")
    sa.add_argument("--middle", help="legal middle name")
    sa.add_argument("--last", required=True, help="legal last name")
    sa.add_argument("--birth-date", required=True, type=arguments.date, help="YYYY-MM-DD")
    sa.add_argument("--gender", required=True, help="gender code as recorded (e.g. F, M, X)")
    sa.add_argument("--school", required=True, help="CDS code of the student's school here")
    sa.add_argument(
        "--records", help="JSON file of existing records (a list of RecordBatch objects)"
    )
    sa.set_defaults(func=cmd_student_add, session=True)
    sf = st_sub.add_parser(
        "flag",
        parents=[common],
        help="set or clear a flag that follows the student: withhold-grades, missing-child",
    )
    sf.add_argument("local_id", help="local student id")
    sf.add_argument("flag", help="withhold-grades (EC 48904.3) or missing-child (EC 49068.6)")
    sf.add_argument("--clear", action="store_true", help="clear the flag")
    sf.set_defaults(func=cmd_student_flag, session=True)

    sw = st_sub.add_parser(
        "show", parents=[common], help="one student: demographics, records held, replaced rows"
    )
    sw.add_argument("local_id", help="local student id")
    sw.set_defaults(func=cmd_student_show, session=True)
    se = st_sub.add_parser(
        "edit", parents=[common], help="correct a student's demographics (audited)"
    )
    se.add_argument("local_id", help="local student id")
    se.add_argument("--ssid", help="statewide student id (10 digits)")
    se.add_argument("--first", help="legal first name")
    se.add_argument("--middle", help="legal middle name")
    se.add_argument("--last", help="legal last name")
    se.add_argument("--birth-date", help="YYYY-MM-DD")
    se.add_argument("--gender", help="gender code (F, M, X)")
    se.add_argument("--school", help="CDS code of one of our schools")
    se.add_argument(
        "--clear",
        action="append",
        choices=["ssid", "middle", "gender"],
        help="remove a value (repeatable)",
    )
    se.set_defaults(func=cmd_student_edit, session=True)
    sr = st_sub.add_parser(
        "records", parents=[common], help="add records to a student who is enrolled"
    )
    sr.add_argument("local_id", help="local student id")
    sr.add_argument(
        "--records",
        required=True,
        help="JSON file of records (a list of RecordBatch objects, as for 'student add')",
    )
    sr.set_defaults(func=cmd_student_records, session=True)
    sl = st_sub.add_parser("list", parents=[common], help="list or search local students")
    sl.add_argument("query", nargs="?", help="name, SSID or local id")
    sl.add_argument("--limit", type=arguments.limit, default=100)
    sl.set_defaults(func=cmd_student_list, session=True)

    sc = sub.add_parser("schools", help="registered schools of every district")
    sc_sub = sc.add_subparsers(dest="schools_command", required=True, metavar="ACTION")
    ss = sc_sub.add_parser("search", parents=[common], help="find a school by name or CDS code")
    ss.add_argument("query")
    ss.add_argument("--limit", type=arguments.limit, default=20)
    ss.set_defaults(func=cmd_schools_search, session=True)

    rq = sub.add_parser("request", help="ask another district for a student's records")
    rq_sub = rq.add_subparsers(dest="request_command", required=True, metavar="ACTION")
    rc = rq_sub.add_parser(
        "create", parents=[common], help="request a student's records from the prior school"
    )
    rc.add_argument("--student", help="local id of the student, enrolled here")
    rc.add_argument("--prior-school", help="CDS code of the prior school (see 'rt schools search')")
    rc.add_argument("--prior-local-id", help="the student's id at the prior district, if known")
    rc.add_argument(
        "--tables",
        type=arguments.table_list,
        help=f"comma-separated subset of {','.join(TABLE_NAMES)} (default: all)",
    )
    rc.add_argument(
        "--from-csv",
        metavar="FILE",
        type=arguments.csv_file,
        help=(
            "many students at once: a CSV file with a header row, columns local_id, "
            "prior_school (and optionally prior_local_id, tables); one request a line"
        ),
    )
    rc.add_argument(
        "--foster-youth",
        action="store_true",
        help="the student is a foster youth: records due in 2 business days (EC 49069.5)",
    )
    rc.add_argument(
        "--discipline-records",
        action="store_true",
        help="also ask for suspension and expulsion records (EC 48201(b))",
    )
    rc.set_defaults(func=cmd_request_create, session=True)

    rl = sub.add_parser("requests", parents=[common], help="list requests, both directions")
    rl.add_argument(
        "--direction", choices=sorted(DIRECTIONS), help="in: we were asked; out: we asked"
    )
    rl.add_argument(
        "--status",
        type=arguments.request_status,
        help="QUEUED, PENDING, DATA_RECEIVED, IMPORTED, SENT, COMPLETE, REJECTED, FAILED, EXPIRED",
    )
    rl.add_argument("--limit", type=arguments.limit, default=100)
    rl.set_defaults(func=cmd_requests, session=True)

    sh = sub.add_parser("show", parents=[common], help="one request in detail")
    sh.add_argument("request_id", type=arguments.request_ref, help=_REQUEST_ID_HELP)
    sh.set_defaults(func=cmd_show, session=True)

    mt = sub.add_parser(
        "match",
        parents=[common],
        help="local students that may be the one requested (prior district)",
    )
    mt.add_argument("request_id", type=arguments.request_ref, help=_REQUEST_ID_HELP)
    mt.set_defaults(func=cmd_match, session=True)

    ap = sub.add_parser(
        "approve", parents=[common], help="approve an inbound request and send the records"
    )
    ap.add_argument("request_id", nargs="?", type=arguments.request_ref, help=_REQUEST_ID_HELP)
    ap.add_argument(
        "--all-exact",
        action="store_true",
        help=(
            "approve every pending request whose student matches exactly (SSID, birth date, "
            "first and last name); the others stay pending for a person"
        ),
    )
    ap.add_argument(
        "--student", help="local id of the matched student (needed unless the SSID matched exactly)"
    )
    ap.add_argument(
        "--tables", type=arguments.table_list, help="tables to send (default: those requested)"
    )
    ap.add_argument(
        "--wait",
        action="store_true",
        help=(
            "wait until the records are delivered, saying why when they wait; on a request "
            "already approved, follow its delivery (as 'rt wait')"
        ),
    )
    ap.add_argument(
        "--discipline-records",
        choices=["sent", "none-on-file"],
        help="answer to a request for suspension/expulsion records (EC 48201(b)); required then",
    )
    ap.set_defaults(func=cmd_approve, session=True)

    rj = sub.add_parser("reject", parents=[common], help="reject an inbound request with a reason")
    rj.add_argument("request_id", type=arguments.request_ref, help=_REQUEST_ID_HELP)
    rj.add_argument("--reason", required=True, choices=sorted(REASONS))
    rj.add_argument("--text", help="explanation for the other registrar (required with 'other')")
    rj.set_defaults(func=cmd_reject, session=True)

    rt = sub.add_parser(
        "retry",
        parents=[common],
        help="start a FAILED request over, or push its waiting sends now (past their backoff)",
    )
    rt.add_argument("request_id", type=arguments.request_ref, help=_REQUEST_ID_HELP)
    rt.set_defaults(func=cmd_retry, session=True)
    waiting.add_wait_command(sub, common)

    rv = sub.add_parser(
        "review", parents=[common], help="compare received records with what we hold"
    )
    rv.add_argument("request_id", type=arguments.request_ref, help=_REQUEST_ID_HELP)
    rv.add_argument(
        "--rows",
        nargs="?",
        const="changed",
        choices=["changed", "all"],
        help="list rows too: duplicates and conflicts (or 'all')",
    )
    rv.set_defaults(func=cmd_review, session=True)

    im = sub.add_parser(
        "import",
        parents=[common],
        help="import received records (new rows; conflicts you accept replace ours)",
    )
    im.add_argument("request_id", nargs="?", type=arguments.request_ref, help=_REQUEST_ID_HELP)
    im.add_argument(
        "--all-new",
        action="store_true",
        help="import every received transfer whose rows are all new; the others stay for review",
    )
    im.add_argument(
        "--accept-conflicts",
        type=arguments.accepted_conflicts,
        help=(
            "'all' or TABLE:INDEX,... as shown by 'rt review --rows': the received row "
            "replaces ours (our old values are kept; 'rt student show' lists them)"
        ),
    )
    im.add_argument(
        "--keep-both",
        type=arguments.accepted_conflicts,
        help="'all' or TABLE:INDEX,...: add the received conflicting row beside ours instead",
    )
    im.set_defaults(func=cmd_import, session=True)

    ds = sub.add_parser(
        "disclosures", parents=[common], help="FERPA record of disclosures (34 CFR 99.32)"
    )
    ds.add_argument("--student", help="local student id (default: every student)")
    ds.set_defaults(func=cmd_disclosures, session=True)

    ms = sub.add_parser("message", parents=[common], help="read a request's thread, or write to it")
    ms.add_argument("request_id", type=arguments.request_ref, help=_REQUEST_ID_HELP)
    ms.add_argument("text", nargs="?", help="message to send (omit to read the thread)")
    ms.set_defaults(func=cmd_message, session=True)
