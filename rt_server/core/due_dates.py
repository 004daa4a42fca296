"""When an inbound records request is due, under which section, and which notices it calls for.

Pure: the request's facts, the responding school's calendar (or None) and an
instant in; dates and explanations out. The statutes (California Education Code):

- EC 49068: the records within 10 schooldays of the request's receipt;
- EC 49069.5: a foster youth's records within 2 business days;
- EC 48915.1 / 48918: information on an expulsion within 5 working days (the
  requester asked for suspension and expulsion records, EC 48201(b)).

A request's due date is the earliest of the deadlines that apply; the rule that
set it is kept beside it. Days are counted from the day after receipt, in
California's time: a request received on a Friday evening or a Saturday has
Monday as its first day. Schooldays come from the responding school's loaded
calendar. Two situations are explicit, never guessed:

- *summer* (the calendar has no school day ahead): the schoolday clock waits
  for the next school day; the due date is None and the note says so, until
  next year's calendar is loaded;
- *no calendar loaded* for the school: schooldays are counted as business days
  (Monday to Friday less California state holidays), and the note says so.
  That is never later than the school's own calendar would make it.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol
from zoneinfo import ZoneInfo

from rt_server.core.calendars import SchoolCalendar, is_business_day

__all__ = [
    "CALIFORNIA",
    "REMINDER_SCHOOLDAYS",
    "Clock",
    "DueDate",
    "DueRule",
    "NoticeDue",
    "NoticeKind",
    "OpenRequest",
    "RequestFacts",
    "deadlines",
    "due_date",
    "local_day",
    "notices_due",
    "schooldays_left",
]

CALIFORNIA: Final = ZoneInfo("America/Los_Angeles")
REMINDER_SCHOOLDAYS: Final = 3  # a reminder when a due date is 3 schooldays away
_SEARCH_LIMIT: Final = 800  # days: a count that runs longer has no calendar ahead


class Clock(Protocol):
    """The time now, timezone-aware (UTC). The server's is ``datetime.now(UTC)``;
    tests inject one they move."""

    def __call__(self) -> dt.datetime: ...


class DueRule(enum.StrEnum):
    EC_49068 = "EC 49068"
    EC_49069_5 = "EC 49069.5"
    EC_48915_1 = "EC 48915.1/48918"


_WHAT: Final = {
    DueRule.EC_49068: "records within 10 schooldays",
    DueRule.EC_49069_5: "a foster youth's records within 2 business days",
    DueRule.EC_48915_1: "expulsion information within 5 working days",
}


@dataclass(frozen=True)
class RequestFacts:
    """What of an inbound request decides its due date."""

    received_at: dt.datetime
    school: str  # the responding (prior) school's CDS code
    foster_youth: bool = False
    discipline_requested: bool = False  # EC 48201(b): suspension and expulsion records


@dataclass(frozen=True)
class DueDate:
    """One deadline: the day it falls on (None while the clock waits), the rule, why."""

    rule: DueRule
    due_on: dt.date | None
    note: str

    @property
    def what(self) -> str:
        return _WHAT[self.rule]


def local_day(at: dt.datetime) -> dt.date:
    """The California calendar day of an instant."""
    if at.tzinfo is None:
        raise ValueError("a naive datetime has no day in California")
    return at.astimezone(CALIFORNIA).date()


def _nth_day_after(
    start: dt.date, n: int, is_day: Callable[[dt.date], bool]
) -> tuple[dt.date | None, int]:
    """(the n-th day after ``start`` that ``is_day``, or None; how many were counted)."""
    counted, probe = 0, start
    for _ in range(_SEARCH_LIMIT):
        probe += dt.timedelta(1)
        if is_day(probe):
            counted += 1
            if counted == n:
                return probe, counted
    return None, counted


def _schooldays(received: dt.date, calendar: SchoolCalendar | None, school: str) -> DueDate:
    if calendar is None or not calendar.terms:
        due, _ = _nth_day_after(received, 10, is_business_day)
        return DueDate(
            DueRule.EC_49068,
            due,
            f"No calendar is loaded for school {school}: schooldays counted as business "
            "days (Mon-Fri less California state holidays).",
        )
    due, counted = _nth_day_after(received, 10, calendar.is_school_day)
    if due is None:
        return DueDate(
            DueRule.EC_49068,
            None,
            f"Waiting for the next school day: school {school}'s calendar has no "
            f"{'' if counted == 0 else 'more '}school day ahead ({counted} of 10 counted); "
            "the 10-schoolday clock starts again when next year's calendar is loaded.",
        )
    first = calendar.next_school_day_after(received)
    if calendar.term_of(received) is None or (
        first is not None and calendar.term_of(first) != calendar.term_of(received)
    ):
        return DueDate(
            DueRule.EC_49068,
            due,
            f"Received outside the school year: the schoolday clock waited for the next "
            f"school day, {first}.",
        )
    if calendar.term_of(due) != calendar.term_of(received):
        return DueDate(
            DueRule.EC_49068, due, "The count waited over the summer for the next school year."
        )
    return DueDate(DueRule.EC_49068, due, f"10 schooldays of school {school}'s calendar.")


def deadlines(facts: RequestFacts, calendar: SchoolCalendar | None) -> tuple[DueDate, ...]:
    """Every deadline the request is under, the general one (EC 49068) first."""
    received = local_day(facts.received_at)
    found = [_schooldays(received, calendar, facts.school)]
    if facts.foster_youth:
        due, _ = _nth_day_after(received, 2, is_business_day)
        found.append(DueDate(DueRule.EC_49069_5, due, "Foster youth: 2 business days."))
    if facts.discipline_requested:
        due, _ = _nth_day_after(received, 5, is_business_day)
        found.append(
            DueDate(DueRule.EC_48915_1, due, "Expulsion information asked for: 5 working days.")
        )
    return tuple(found)


def due_date(facts: RequestFacts, calendar: SchoolCalendar | None) -> DueDate:
    """The deadline that comes first (a dated one before one still waiting)."""
    found = deadlines(facts, calendar)
    dated = [d for d in found if d.due_on is not None]
    if not dated:
        return found[0]
    return min(dated, key=lambda d: (d.due_on, list(DueRule).index(d.rule)))


def schooldays_left(today: dt.date, due_on: dt.date, calendar: SchoolCalendar | None) -> int:
    """School days after ``today`` up to and including ``due_on`` (business days
    without a calendar)."""
    is_day = calendar.is_school_day if calendar is not None and calendar.terms else None
    count, probe = 0, today
    while probe < due_on:
        probe += dt.timedelta(1)
        if (is_day or is_business_day)(probe):
            count += 1
    return count


class NoticeKind(enum.StrEnum):
    REMINDER = "REMINDER"  # the due date is REMINDER_SCHOOLDAYS schooldays away or less
    OVERDUE = "OVERDUE"  # the due date has passed: to the records administrator


@dataclass(frozen=True)
class OpenRequest:
    """An inbound request not yet answered, as ``notices_due`` needs it."""

    request_id: str
    school: str
    due_on: dt.date | None
    rule: DueRule


@dataclass(frozen=True)
class NoticeDue:
    """A notice to send. ``dedupe_key`` is the same every time the same notice is due:
    the sender records it and sends each key once."""

    kind: NoticeKind
    request_id: str
    school: str
    due_on: dt.date
    rule: DueRule
    dedupe_key: str


def notices_due(
    open_requests: Iterable[OpenRequest],
    now: dt.datetime,
    calendars: Mapping[str, SchoolCalendar],
) -> list[NoticeDue]:
    """The reminder and overdue notices due at ``now`` for open inbound requests.

    A request past its due date gets an OVERDUE notice; one due within
    ``REMINDER_SCHOOLDAYS`` schooldays (today included as not yet passed) gets a
    REMINDER. A request still waiting for the next school day gets neither.
    Keys include the due date, so a due date moved by a newly loaded calendar
    is reminded again.
    """
    today = local_day(now)
    out: list[NoticeDue] = []
    for item in open_requests:
        if item.due_on is None:
            continue
        if today > item.due_on:
            kind = NoticeKind.OVERDUE
        elif schooldays_left(today, item.due_on, calendars.get(item.school)) <= (
            REMINDER_SCHOOLDAYS
        ):
            kind = NoticeKind.REMINDER
        else:
            continue
        key = f"{kind.value}:{item.request_id}:{item.due_on.isoformat()}"
        out.append(NoticeDue(kind, item.request_id, item.school, item.due_on, item.rule, key))
    return out
