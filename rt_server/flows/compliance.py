"""The law's clocks: school calendars, due dates of inbound requests, the notices due.

What the registrar calls (``rt calendar load``, ``rt calendar show``, ``rt due``)
and what the mail side calls (``notices_due``: which reminder and overdue
notices are due now, each with a key to send it once). The statutes are in
``rt_server.core.due_dates``; the calendars' reading in ``rt_server.core.calendars``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import PurePath

from rt_client.errors import InvalidInput, NotFound
from rt_client.ids import parse_school_code
from rt_server.core import calendars as calendar_files
from rt_server.core import due_dates
from rt_server.core.inputs import parse_actor
from rt_server.core.model import RequestRecord
from rt_server.core.statuses import Direction, Status
from rt_server.flows.district import District
from rt_server.store import calendars, flags, requests
from rt_server.store.calendars import LoadedCalendar
from rt_server.store.schema import STAFF_LEN

__all__ = [
    "FALLBACK",
    "LoadedCalendar",
    "calendars_of",
    "due_list",
    "is_overdue",
    "load_calendar",
    "notice_sent",
    "notices_due",
    "pending_notices",
    "our_schools",
    "today",
]

FALLBACK = (
    "Without a loaded calendar, a school's schooldays (EC 49068) are counted as business "
    "days: Monday to Friday less California state holidays."
)


def today(d: District) -> dt.date:
    """Today in California, by the district's clock."""
    return due_dates.local_day(d.clock())


def our_schools(d: District) -> list[str]:
    return sorted(s.cds_code for s in d.entry_of(d.code).schools)


def is_overdue(d: District, r: RequestRecord) -> bool:
    """An inbound request still undecided whose due date has passed."""
    return (
        r.direction is Direction.INBOUND
        and r.status is Status.PENDING
        and r.approved is None
        and r.due_on is not None
        and today(d) > r.due_on
    )


def _school(d: District, value: str) -> str:
    school = parse_school_code(value)
    if school not in our_schools(d):
        raise NotFound(f"school {school} is not one of this district's schools")
    return school


def _day(value: str, what: str) -> dt.date | None:
    if not value.strip():
        return None
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(f"the {what} is not a date (YYYY-MM-DD)") from None


def load_calendar(
    d: District,
    *,
    school: str,
    content: bytes,
    file_format: str,
    first_day: str = "",
    last_day: str = "",
    actor: str,
    file_name: str = "",
) -> tuple[LoadedCalendar, int]:
    """Read a calendar file and store it as ``school``'s; give the school's undecided
    inbound requests their due dates again. Returns (the calendar, requests re-dated).

    Raises ``InvalidInput`` (a file that is not a calendar, nothing stored) and
    ``NotFound`` (not our school).
    """
    code = _school(d, school)
    who = parse_actor(actor, STAFF_LEN) or "unknown"
    kind = file_format.strip().lower()
    if kind == "ics":
        events = calendar_files.events_from_ics(content)
    elif kind == "csv":
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput("the CSV is not UTF-8 text") from None
        events = calendar_files.events_from_csv(text)
    else:
        raise InvalidInput("the calendar file must be iCalendar (.ics) or CSV (.csv)")
    terms = calendar_files.build_terms(
        events, _day(first_day, "first day"), _day(last_day, "last day")
    )
    name = PurePath(file_name).name if file_name else f"a {kind} file"
    calendars.save_calendar(d.engine, code, terms, source=name, actor=who, now=d.clock())
    loaded = calendars.loaded_calendars(d.engine, code)[0]
    redated = 0
    for r in requests.unanswered_inbound(d.engine, school=code):
        due = due_dates.due_date(
            due_dates.RequestFacts(
                r.received_at or r.created_at,
                code,
                r.foster_youth,
                r.discipline_requested,
            ),
            loaded.calendar,
        )
        if (due.due_on, due.rule.value) != (r.due_on, r.due_rule):
            requests.set_due(d.engine, r.request_id, due)
            redated += 1
    return loaded, redated


def calendars_of(d: District, school: str = "") -> tuple[list[LoadedCalendar], list[str]]:
    """The loaded calendars (of one school, or all) and our schools without one."""
    code = _school(d, school) if school.strip() else None
    loaded = calendars.loaded_calendars(d.engine, code)
    have = {c.calendar.school for c in loaded}
    without = [s for s in ([code] if code else our_schools(d)) if s not in have]
    return loaded, without


def due_list(
    d: District, *, overdue_only: bool = False, limit: int = 1000
) -> tuple[dt.date, list[RequestRecord]]:
    """(today in California, the undecided inbound requests, soonest due first)."""
    found = requests.unanswered_inbound(d.engine, limit=limit)
    if overdue_only:
        found = [r for r in found if is_overdue(d, r)]
    return today(d), found


def notices_due(d: District) -> list[due_dates.NoticeDue]:
    """The reminder and overdue notices due now (each ``dedupe_key`` to be sent once)."""
    open_requests = [
        due_dates.OpenRequest(r.request_id, r.prior_school, r.due_on, due_dates.DueRule(r.due_rule))
        for r in requests.unanswered_inbound(d.engine)
        if r.due_rule
    ]
    found = {c.calendar.school: c.calendar for c in calendars.loaded_calendars(d.engine)}
    return due_dates.notices_due(open_requests, d.clock(), found)


def set_student_flag(
    d: District, local_id: str, flag: str, *, clear: bool, actor: str
) -> list[flags.StudentFlagRecord]:
    """Set or clear one of a student's flags (EC 48904.3, 49068.6). Returns the flags.

    Raises ``InvalidInput`` (unknown flag) and ``NotFound`` (no such student).
    """
    which = flags.parse_flag(flag)
    who = parse_actor(actor, STAFF_LEN) or "unknown"
    flags.set_flag(
        d.engine, local_id, which, on=not clear, source="local", actor=who, now=d.clock()
    )
    return flags.flags_of(d.engine, local_id)


def flags_of(d: District, local_id: str) -> list[flags.StudentFlagRecord]:
    return flags.flags_of(d.engine, local_id)


def pending_notices(d: District) -> list[flags.ComplianceNotice]:
    """Stored notices not yet sent (e.g. the EC 49068.6 alert), oldest first: the mail
    side sends each and calls ``notice_sent``."""
    return flags.notices(d.engine, unsent_only=True)


def notice_sent(d: District, dedupe_key: str) -> None:
    flags.mark_notice_sent(d.engine, dedupe_key, d.clock())
