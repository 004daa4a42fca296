"""``rt``: the registrar's and IT admin's command line.

A thin shell over the district server's local ``Registrar`` service (a Unix
socket named in the district config). Tables for humans by default, ``--json``
for scripts. Only this module turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# gRPC reads its TLS cipher list once, when it is first imported: restrict it
# (DESIGN.md section 3) before anything imports grpc. This module is an entry point.
from rt_client.tls import configure_grpc_tls

configure_grpc_tls()

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from protos.rt.v1 import common_pb2, records_pb2, registrar_pb2, registrar_pb2_grpc
from rt_client.errors import RecordsTransferError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
RPC_TIMEOUT = 60.0
REASONS = {
    "student-not-found": common_pb2.STUDENT_NOT_FOUND,
    "not-enrolled-here": common_pb2.NOT_ENROLLED_HERE,
    "records-withheld": common_pb2.RECORDS_WITHHELD,
    "duplicate-request": common_pb2.DUPLICATE_REQUEST,
    "other": common_pb2.OTHER,
}
DIRECTIONS: dict[str, registrar_pb2.Direction.ValueType] = {
    "in": registrar_pb2.INBOUND,
    "out": registrar_pb2.OUTBOUND,
}
TABLE_NAMES = [n for n in common_pb2.TableCode.keys() if n != "TABLE_CODE_UNSPECIFIED"]


class CliError(RecordsTransferError):
    """A problem the user can fix by changing the command line or the config."""


def _tables(text: str | None) -> list[common_pb2.TableCode.ValueType]:
    if not text:
        return []
    out = []
    for name in text.replace(" ", "").upper().split(","):
        if name not in TABLE_NAMES:
            raise CliError(f"unknown table {name!r}; tables are {', '.join(TABLE_NAMES)}")
        out.append(common_pb2.TableCode.Value(name))
    return out


def _table_names(codes: Sequence[common_pb2.TableCode.ValueType]) -> str:
    return ",".join(common_pb2.TableCode.Name(c) for c in codes) or "all"


def _status(code: common_pb2.RequestStatus.ValueType) -> str:
    return common_pb2.RequestStatus.Name(code)


def _ts(ts: Any) -> str:
    if not ts.seconds:
        return ""
    return str(ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"))


class Session:
    """One CLI invocation: the registrar stub, the output mode and the actor."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json = bool(getattr(args, "json", False))
        self.console = Console()
        self.err = Console(stderr=True)
        self.actor = args.actor or getpass.getuser()
        self._stub: registrar_pb2_grpc.RegistrarStub | None = None
        self._socket: str | None = None

    @property
    def stub(self) -> registrar_pb2_grpc.RegistrarStub:
        if self._stub is None:
            from rt_client.config import load_config

            config_path = self.args.config or os.environ.get("RT_CONFIG")
            if not config_path:
                raise CliError("no district config: pass --config FILE or set RT_CONFIG")
            config = load_config(Path(config_path))
            self._socket = str(config.registrar_socket)
            channel = grpc.insecure_channel(f"unix:{self._socket}")
            self._stub = registrar_pb2_grpc.RegistrarStub(channel)
        return self._stub

    def call(self, method: str, request: Message) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.UNAVAILABLE and "connect" in str(
                exc.details() if isinstance(exc, grpc.Call) else ""
            ):
                raise CliError(
                    f"the district server is not running (no answer on {self._socket}); "
                    "start it with 'rt serve'"
                ) from exc
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            raise CliError(detail or (code.name if code else "the call failed")) from exc

    def emit(self, message: Message | list[Message], render: Callable[[], None]) -> None:
        if self.json:
            if isinstance(message, list):
                data: Any = [self._as_dict(m) for m in message]
            else:
                data = self._as_dict(message)
            print(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            render()

    @staticmethod
    def _as_dict(message: Message) -> Any:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)


# --- commands -----------------------------------------------------------------


def cmd_serve(s: Session) -> int:
    from rt_client.config import load_config
    from rt_server.server import serve_forever

    config_path = s.args.config or os.environ.get("RT_CONFIG")
    if not config_path:
        raise CliError("no district config: pass --config FILE or set RT_CONFIG")
    serve_forever(load_config(Path(config_path)))
    return EXIT_OK


def cmd_db(s: Session) -> int:
    """``rt db upgrade`` / ``rt db status``: the district database's schema revision."""
    from rt_client.config import load_config
    from rt_server.store import make_engine, migrations

    config_path = s.args.config or os.environ.get("RT_CONFIG")
    if not config_path:
        raise CliError("no district config: pass --config FILE or set RT_CONFIG")
    config = load_config(Path(config_path))
    engine = make_engine(config.database_url)
    try:
        if s.args.db_command == "upgrade":
            from rt_server.flows.district import Limits
            from rt_server.store.spool import adopt_file_spool

            before, after = migrations.upgrade(engine)
            # Sealed transfers an older version spooled to files go into the database.
            adopted = adopt_file_spool(engine, config.data_dir / "spool", Limits().frame_bytes)
            result = {"from": before, "to": after, "changed": before != after, "spooled": adopted}
            text = (
                f"District database upgraded from {before or 'nothing'} to revision {after}."
                if before != after
                else f"District database already at the newest revision ({after})."
            )
            if adopted:
                text += f" {adopted} sealed transfer(s) moved from the spool folder into it."
        else:
            state = migrations.state(engine)
            result = {"current": state.current, "head": state.head, "at_head": state.at_head}
            if state.at_head:
                text = f"District database at the newest revision ({state.head})."
            elif not state.known:
                text = (
                    f"District database at revision {state.current}, newer than this version "
                    f"of rt knows ({state.head}): upgrade the software."
                )
            else:
                text = (
                    f"District database at revision {state.current or 'none'}; the newest is "
                    f"{state.head}: run 'rt db upgrade'."
                )
    finally:
        engine.dispose()
    if s.json:
        print(json.dumps(result))
    else:
        s.console.print(text, markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


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
    return EXIT_OK


def _read_records_file(path: Path) -> list[records_pb2.RecordBatch]:
    """Records as JSON: a list of RecordBatch objects in protobuf's JSON form."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [json_format.ParseDict(item, records_pb2.RecordBatch()) for item in data]
    except (OSError, ValueError, json_format.ParseError) as exc:
        raise CliError(f"cannot read records from {path}: {exc}") from exc


def cmd_student_list(s: Session) -> int:
    reply = s.call(
        "ListStudents",
        registrar_pb2.ListStudentsRequest(query=s.args.query or "", limit=s.args.limit),
    )

    def render() -> None:
        t = Table("local id", "SSID", "name", "birth date", "gender", "school")
        for st in reply.students:
            name = " ".join(
                p for p in (st.legal_first_name, st.legal_middle_name, st.legal_last_name) if p
            )
            t.add_row(st.local_id, st.ssid, name, st.birth_date, st.gender, st.school)
        s.console.print(t)

    s.emit(list(reply.students), render)
    return EXIT_OK


def cmd_schools_search(s: Session) -> int:
    reply = s.call(
        "SearchSchools", registrar_pb2.SchoolQuery(query=s.args.query, limit=s.args.limit)
    )

    def render() -> None:
        t = Table("CDS code", "school", "district", "district name")
        for sc in reply.schools:
            t.add_row(sc.cds_code, sc.name, sc.district_code, sc.district_name)
        s.console.print(t)
        if not reply.schools:
            s.console.print("No registered school matches.")

    s.emit(list(reply.schools), render)
    return EXIT_OK


def cmd_request_create(s: Session) -> int:
    a = s.args
    reply = s.call(
        "CreateRequest",
        registrar_pb2.CreateRequestRequest(
            student_local_id=a.student,
            prior_school=a.prior_school,
            prior_local_id=a.prior_local_id or "",
            tables=_tables(a.tables),
            actor=s.actor,
        ),
    )
    s.emit(reply, lambda: _render_detail(s, reply))
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

    def render() -> None:
        t = Table("request", "dir", "status", "other district", "student", "updated", "note")
        for r in reply.requests:
            t.add_row(
                r.request_id,
                "out" if r.direction == registrar_pb2.OUTBOUND else "in",
                _status(r.status),
                r.other_district,
                r.student_name,
                _ts(r.updated_at),
                r.status_reason,
            )
        s.console.print(t)

    s.emit(list(reply.requests), render)
    return EXIT_OK


def _render_detail(s: Session, d: registrar_pb2.RequestDetail) -> None:
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
            _status(r.status)
            + (" (approved, delivering)" if d.approved and r.status == common_pb2.PENDING else ""),
        ),
        ("other district", r.other_district),
        ("student", f"{r.student_name} (SSID {r.ssid})" if r.ssid else r.student_name),
        ("local student id", d.local_student_id),
        ("requesting school", d.requesting_school),
        ("prior school", d.prior_school),
        ("tables", _table_names(d.tables)),
        ("created", _ts(r.created_at)),
        ("updated", _ts(r.updated_at)),
    ]
    if r.status_reason:
        rows.append(("reason", r.status_reason))
    if d.reject_reason:
        rows.append(
            (
                "rejected",
                common_pb2.RejectReason.Name(d.reject_reason)
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
    for k, v in rows:
        t.add_row(k, v)
    s.console.print(t)


def cmd_show(s: Session) -> int:
    reply = s.call(
        "GetRequest", registrar_pb2.RequestRef(request_id=s.args.request_id, actor=s.actor)
    )
    s.emit(reply, lambda: _render_detail(s, reply))
    return EXIT_OK


def cmd_match(s: Session) -> int:
    reply = s.call(
        "MatchStudent", registrar_pb2.RequestRef(request_id=s.args.request_id, actor=s.actor)
    )

    def render() -> None:
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
        s.console.print(t)
        if not reply.candidates:
            s.console.print(
                "No local student matches; consider 'rt reject --reason student-not-found'."
            )

    s.emit(list(reply.candidates), render)
    return EXIT_OK


def cmd_approve(s: Session) -> int:
    a = s.args
    reply = s.call(
        "ApproveRequest",
        registrar_pb2.ApproveRequestRequest(
            request_id=a.request_id,
            student_local_id=a.student or "",
            tables=_tables(a.tables),
            actor=s.actor,
        ),
    )
    if a.wait:
        reply = _wait_delivery(s, a.request_id)
    s.emit(reply, lambda: _render_detail(s, reply))
    return EXIT_OK


def _wait_delivery(
    s: Session, request_id: str, timeout: float = 600.0
) -> registrar_pb2.RequestDetail:
    """Poll until the delivery is acknowledged (SENT) or fails, with a progress bar."""
    deadline = time.monotonic() + timeout
    columns = [TextColumn("delivering"), BarColumn(), DownloadColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=s.err, disable=s.json, transient=True) as bar:
        task = bar.add_task("deliver", total=None)
        while True:
            d: registrar_pb2.RequestDetail = s.call(
                "GetRequest", registrar_pb2.RequestRef(request_id=request_id, actor=s.actor)
            )
            if d.delivery_bytes_total:
                bar.update(task, total=d.delivery_bytes_total, completed=d.delivery_bytes_done)
            if d.summary.status not in (common_pb2.PENDING,) or not d.approved:
                return d
            if time.monotonic() > deadline:
                raise CliError("the delivery has not finished yet; check with 'rt show'")
            time.sleep(0.1)


def cmd_reject(s: Session) -> int:
    a = s.args
    reply = s.call(
        "RejectRequest",
        registrar_pb2.RejectRequestRequest(
            request_id=a.request_id, reason=REASONS[a.reason], text=a.text or "", actor=s.actor
        ),
    )
    s.emit(reply, lambda: _render_detail(s, reply))
    return EXIT_OK


def cmd_retry(s: Session) -> int:
    reply = s.call(
        "RetryRequest", registrar_pb2.RequestRef(request_id=s.args.request_id, actor=s.actor)
    )
    s.emit(reply, lambda: _render_detail(s, reply))
    return EXIT_OK


def cmd_review(s: Session) -> int:
    reply = s.call(
        "ReviewTransfer", registrar_pb2.RequestRef(request_id=s.args.request_id, actor=s.actor)
    )

    def render() -> None:
        t = Table("table", "new", "duplicate", "conflict")
        for tr in reply.tables:
            t.add_row(
                common_pb2.TableCode.Name(tr.table),
                str(tr.new_rows),
                str(tr.duplicate_rows),
                str(tr.conflict_rows),
            )
        s.console.print(t)
        if s.args.rows:
            for tr in reply.tables:
                for row in tr.rows:
                    if row.row_class == registrar_pb2.NEW and s.args.rows != "all":
                        continue
                    name = common_pb2.TableCode.Name(tr.table)
                    incoming = json_format.MessageToDict(getattr(row.incoming, name.lower())[0])
                    row_class = registrar_pb2.RowClass.Name(row.row_class)
                    line = f"{name}:{row.index} {row_class} {incoming}"
                    if row.differing_columns:
                        line += f" differs in {', '.join(row.differing_columns)}"
                    s.console.print(line, markup=False)

    s.emit(reply, render)
    return EXIT_OK


def cmd_import(s: Session) -> int:
    a = s.args
    refs = []
    accept_all = False
    if a.accept_conflicts == "all":
        accept_all = True
    elif a.accept_conflicts:
        for item in a.accept_conflicts.split(","):
            name, _, index = item.partition(":")
            if name.upper() not in TABLE_NAMES or not index.isdigit():
                raise CliError(f"--accept-conflicts takes 'all' or TABLE:INDEX,...; got {item!r}")
            refs.append(
                registrar_pb2.RowRef(
                    table=common_pb2.TableCode.Value(name.upper()), index=int(index)
                )
            )
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
            ),
        )

    def render() -> None:
        if reply.already_imported:
            s.console.print("Already imported; nothing changed.")
        t = Table("table", "imported", "skipped")
        skipped = {c.table: c.rows for c in reply.skipped}
        for c in reply.imported:
            t.add_row(common_pb2.TableCode.Name(c.table), str(c.rows), str(skipped.get(c.table, 0)))
        s.console.print(t)

    s.emit(reply, render)
    return EXIT_OK


def cmd_disclosures(s: Session) -> int:
    reply = s.call(
        "ListDisclosures",
        registrar_pb2.ListDisclosuresRequest(student_local_id=s.args.student or ""),
    )

    def render() -> None:
        t = Table(
            "date",
            "student",
            "to district",
            "to school",
            "tables",
            "request",
            "staff",
            "legal basis",
        )
        for d in reply.disclosures:
            t.add_row(
                _ts(d.disclosed_at),
                f"{d.student_local_id} {d.student_name}",
                d.receiving_district,
                d.receiving_school,
                _table_names(d.tables),
                d.request_id,
                d.acting_staff,
                d.legal_basis,
            )
        s.console.print(t)

    s.emit(list(reply.disclosures), render)
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

    def render() -> None:
        for m in listing.messages:
            who = "system" if m.system else f"{m.author} ({m.from_district})"
            s.console.print(f"[dim]{_ts(m.sent_at)}[/dim] [bold]{who}[/bold]: ", end="")
            s.console.print(m.body, markup=False)

    s.emit(list(listing.messages), render)
    return EXIT_OK


# --- parser -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="district config file (default: $RT_CONFIG)")
    common.add_argument(
        "--json", action="store_true", help="print JSON for scripts instead of tables"
    )
    common.add_argument(
        "--as", dest="actor", help="staff member recorded in the audit trail (default: your login)"
    )

    p = argparse.ArgumentParser(
        prog="rt",
        description=(
            "Records Transfer: request, approve, review and import student records "
            "between districts."
        ),
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    try:
        from rt_client.enroll import add_enroll_parser

        add_enroll_parser(sub)
    except ImportError:  # pragma: no cover - the enrollment module is part of the package
        pass

    sp = sub.add_parser(
        "serve", parents=[common], help="run this district's server (peer + registrar services)"
    )
    sp.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="the district database's schema (migrations)")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser(
        "upgrade",
        parents=[common],
        help="create the database, or migrate it to this version's schema (back it up first)",
        description=(
            "Migrate the district database named in the config to the newest schema revision, "
            "in one transaction. Run it once per upgrade, before starting the new version's "
            "servers; replicas refuse to start on a database that is not at their revision."
        ),
    ).set_defaults(func=cmd_db)
    db_sub.add_parser(
        "status", parents=[common], help="the database's schema revision, and the newest"
    ).set_defaults(func=cmd_db)

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
    sa.add_argument("--birth-date", required=True, help="YYYY-MM-DD")
    sa.add_argument("--gender", required=True, help="gender code as recorded (e.g. F, M, X)")
    sa.add_argument("--school", required=True, help="CDS code of the student's school here")
    sa.add_argument(
        "--records", help="JSON file of existing records (a list of RecordBatch objects)"
    )
    sa.set_defaults(func=cmd_student_add)
    sl = st_sub.add_parser("list", parents=[common], help="list or search local students")
    sl.add_argument("query", nargs="?", help="name, SSID or local id")
    sl.add_argument("--limit", type=int, default=100)
    sl.set_defaults(func=cmd_student_list)

    sc = sub.add_parser("schools", help="registered schools of every district")
    sc_sub = sc.add_subparsers(dest="schools_command", required=True, metavar="ACTION")
    ss = sc_sub.add_parser("search", parents=[common], help="find a school by name or CDS code")
    ss.add_argument("query")
    ss.add_argument("--limit", type=int, default=20)
    ss.set_defaults(func=cmd_schools_search)

    rq = sub.add_parser("request", help="ask another district for a student's records")
    rq_sub = rq.add_subparsers(dest="request_command", required=True, metavar="ACTION")
    rc = rq_sub.add_parser(
        "create", parents=[common], help="request a student's records from the prior school"
    )
    rc.add_argument("--student", required=True, help="local id of the student, enrolled here")
    rc.add_argument(
        "--prior-school",
        required=True,
        help="CDS code of the prior school (see 'rt schools search')",
    )
    rc.add_argument("--prior-local-id", help="the student's id at the prior district, if known")
    rc.add_argument(
        "--tables", help=f"comma-separated subset of {','.join(TABLE_NAMES)} (default: all)"
    )
    rc.set_defaults(func=cmd_request_create)

    rl = sub.add_parser("requests", parents=[common], help="list requests, both directions")
    rl.add_argument(
        "--direction", choices=sorted(DIRECTIONS), help="in: we were asked; out: we asked"
    )
    rl.add_argument(
        "--status",
        help="QUEUED, PENDING, DATA_RECEIVED, IMPORTED, SENT, COMPLETE, REJECTED, FAILED, EXPIRED",
    )
    rl.add_argument("--limit", type=int, default=100)
    rl.set_defaults(func=cmd_requests)

    sh = sub.add_parser("show", parents=[common], help="one request in detail")
    sh.add_argument("request_id")
    sh.set_defaults(func=cmd_show)

    mt = sub.add_parser(
        "match",
        parents=[common],
        help="local students that may be the one requested (prior district)",
    )
    mt.add_argument("request_id")
    mt.set_defaults(func=cmd_match)

    ap = sub.add_parser(
        "approve", parents=[common], help="approve an inbound request and send the records"
    )
    ap.add_argument("request_id")
    ap.add_argument(
        "--student", help="local id of the matched student (needed unless the SSID matched exactly)"
    )
    ap.add_argument("--tables", help="tables to send (default: those requested)")
    ap.add_argument(
        "--wait",
        action="store_true",
        help="wait until the records are delivered, with a progress bar",
    )
    ap.set_defaults(func=cmd_approve)

    rj = sub.add_parser("reject", parents=[common], help="reject an inbound request with a reason")
    rj.add_argument("request_id")
    rj.add_argument("--reason", required=True, choices=sorted(REASONS))
    rj.add_argument("--text", help="explanation for the other registrar (required with 'other')")
    rj.set_defaults(func=cmd_reject)

    rt = sub.add_parser("retry", parents=[common], help="retry a FAILED request or delivery")
    rt.add_argument("request_id")
    rt.set_defaults(func=cmd_retry)

    rv = sub.add_parser(
        "review", parents=[common], help="compare received records with what we hold"
    )
    rv.add_argument("request_id")
    rv.add_argument(
        "--rows",
        nargs="?",
        const="changed",
        choices=["changed", "all"],
        help="list rows too: duplicates and conflicts (or 'all')",
    )
    rv.set_defaults(func=cmd_review)

    im = sub.add_parser(
        "import", parents=[common], help="import received records (new rows; chosen conflicts)"
    )
    im.add_argument("request_id")
    im.add_argument(
        "--accept-conflicts", help="'all' or TABLE:INDEX,... as shown by 'rt review --rows'"
    )
    im.set_defaults(func=cmd_import)

    ds = sub.add_parser(
        "disclosures", parents=[common], help="FERPA record of disclosures (34 CFR 99.32)"
    )
    ds.add_argument("--student", help="local student id (default: every student)")
    ds.set_defaults(func=cmd_disclosures)

    ms = sub.add_parser("message", parents=[common], help="read a request's thread, or write to it")
    ms.add_argument("request_id")
    ms.add_argument("text", nargs="?", help="message to send (omit to read the thread)")
    ms.set_defaults(func=cmd_message)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "config"):
        args.config = None
    if not hasattr(args, "actor"):
        args.actor = None
    try:
        if getattr(args, "func", None) is None:
            parser.print_help()
            return EXIT_USAGE
        session = Session(args)
        return int(args.func(session) if args.func.__module__ == __name__ else args.func(args))
    except RecordsTransferError as exc:
        Console(stderr=True).print(
            f"[red]error:[/red] {escape(exc.diagnostics())}", highlight=False
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
