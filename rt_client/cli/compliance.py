"""The registrar's commands for the law's clocks and flags: calendars, due dates, student flags.

``rt calendar load --school CDS FILE`` (iCalendar or a CSV of non-school days),
``rt calendar show``, ``rt due`` (inbound requests not yet answered, soonest due
first), ``rt student flag LOCAL_ID FLAG [--clear]``. Each makes one call to the
district's ``Registrar`` service and shows the answer (or JSON with ``--json``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from protos.rt.v1 import registrar_pb2
from rt_client.cli import arguments, render
from rt_client.cli.session import EXIT_OK, CliError, Session

__all__ = ["add_compliance_commands", "cmd_student_flag"]

_MAX_FILE = 2_000_000


def cmd_calendar_load(s: Session) -> int:
    a = s.args
    path = Path(a.file)
    try:
        if path.stat().st_size > _MAX_FILE:
            raise CliError(f"{a.file} is larger than {_MAX_FILE} bytes: not a school calendar")
        content = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {a.file}: {exc.strerror or exc}") from None
    kind = (a.format or path.suffix.lstrip(".")).lower()
    if kind in {"ical", "ics", "ifb", "icalendar"}:
        kind = "ics"
    if kind not in {"ics", "csv"}:
        raise CliError("give an iCalendar (.ics) or CSV (.csv) file, or say which with --format")
    reply = s.call(
        "LoadCalendar",
        registrar_pb2.LoadCalendarRequest(
            school=a.school,
            content=content,
            file_format=kind,
            first_day=a.first_day or "",
            last_day=a.last_day or "",
            actor=s.actor,
            file_name=path.name,
        ),
    )

    def show() -> None:
        _render_calendar(s, reply)
        s.console.print(
            f"Loaded. {reply.requests_redated} open request(s) of school {reply.school} "
            "given new due dates."
        )

    s.emit(reply, show)
    return EXIT_OK


def _render_calendar(s: Session, c: registrar_pb2.CalendarView) -> None:
    t = Table("school", "first day", "last day", "school days", "weekdays without school", "source")
    for term in c.terms:
        closed = ", ".join(term.closed_days) if s.args.days else f"{len(term.closed_days)} days"
        t.add_row(
            c.school,
            term.first_day,
            term.last_day,
            str(term.school_days),
            closed,
            f"{escape(c.source)}, {render.timestamp(c.loaded_at)} by {escape(c.loaded_by)}",
        )
    s.console.print(t)


def cmd_calendar_show(s: Session) -> int:
    reply = s.call("ShowCalendars", registrar_pb2.ShowCalendarsRequest(school=s.args.school or ""))

    def show() -> None:
        for c in reply.calendars:
            _render_calendar(s, c)
            last = max((t.last_day for t in c.terms), default="")
            if last and last < reply.today:
                s.console.print(
                    f"School {c.school}: no school day ahead after {last} (summer): the "
                    "10-schoolday clock (EC 49068) waits for the next school day; load next "
                    "year's calendar."
                )
        for school in reply.schools_without:
            s.console.print(f"School {school}: no calendar loaded. {reply.fallback}")

    s.emit(reply, show)
    return EXIT_OK


def cmd_due(s: Session) -> int:
    reply = s.call(
        "ListDue",
        registrar_pb2.ListDueRequest(overdue_only=s.args.overdue, limit=s.args.limit),
    )

    def show() -> None:
        t = Table("request", "due", "other district", "student", "received", "why")
        t.columns[0].no_wrap = True
        for r in reply.requests:
            t.add_row(
                r.short_id or r.request_id,
                render.due_text(r),
                r.other_district,
                r.student_name,
                render.timestamp(r.created_at),
                escape(r.due_note),
            )
        s.console.print(t)
        overdue = sum(1 for r in reply.requests if r.overdue)
        s.console.print(
            f"Today (California): {reply.today}. {len(reply.requests)} awaiting an answer, "
            f"{overdue} overdue."
        )

    s.emit(list(reply.requests), show)
    return EXIT_OK


def cmd_student_flag(s: Session) -> int:
    a = s.args
    reply = s.call(
        "SetStudentFlag",
        registrar_pb2.SetStudentFlagRequest(
            local_id=a.local_id, flag=a.flag, clear=a.clear, actor=s.actor
        ),
    )
    s.emit(reply, lambda: render.render_student_detail(s.console, reply))
    return EXIT_OK


def add_compliance_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    cal = sub.add_parser("calendar", help="school calendars: the schooldays of due dates")
    cal_sub = cal.add_subparsers(dest="calendar_command", required=True, metavar="ACTION")
    cl = cal_sub.add_parser(
        "load",
        parents=[common],
        help="load a school's instructional calendar (iCalendar .ics, or CSV of non-school days)",
    )
    cl.add_argument("--school", required=True, help="CDS code of one of our schools")
    cl.add_argument("file", help="the calendar file")
    cl.add_argument("--format", choices=["ics", "csv"], help="default: from the file's extension")
    cl.add_argument("--first-day", type=arguments.date, help="first day of school (YYYY-MM-DD)")
    cl.add_argument("--last-day", type=arguments.date, help="last day of school (YYYY-MM-DD)")
    cl.add_argument("--days", action="store_true", help="list the days without school")
    cl.set_defaults(func=cmd_calendar_load, session=True)
    cs = cal_sub.add_parser("show", parents=[common], help="the loaded calendars")
    cs.add_argument("--school", help="one school (default: all of ours)")
    cs.add_argument("--days", action="store_true", help="list the days without school")
    cs.set_defaults(func=cmd_calendar_show, session=True)

    du = sub.add_parser(
        "due", parents=[common], help="inbound requests awaiting an answer: due and overdue"
    )
    du.add_argument("--overdue", action="store_true", help="only the overdue ones")
    du.add_argument("--limit", type=arguments.limit, default=1000)
    du.set_defaults(func=cmd_due, session=True)
