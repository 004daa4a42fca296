"""School calendars: which days are school days, and the California business day.

A school's instructional calendar is one or more *terms* (a school year: first
and last day of instruction) less the non-school days inside them (holidays,
breaks, staff days). It is read from the iCalendar file (RFC 5545) districts
already publish, or from a CSV of non-school days, and kept per school (CDS
code). Pure: bytes in, values out; ``InvalidInput`` with a registrar's message
for a file that cannot be read as a calendar.

Business days (EC 49069.5) and working days (EC 48915.1, 48918) are Monday to
Friday less California's state holidays (the ``holidays`` package, subdivision
CA): they do not depend on a school's calendar and run through the summer.

How an iCalendar file is read (the README's "Calendars" says it for registrars):

- an all-day event whose summary names the first (last) day of school or of
  instruction opens (closes) a term; a file may hold several school years;
- an all-day event whose summary or categories say there is no school (no
  school, holiday, break, recess, vacation, non-student, pupil-free, staff
  development, teacher work day, closed, furlough) marks its days non-school;
- every other event (back-to-school night, minimum day, a timed meeting) is a
  school day's event and changes nothing. Counting a doubtful day as a school
  day brings a due date earlier, never later.
- recurring events (RRULE) are taken at their first occurrence only.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import holidays
from icalendar import Calendar

from rt_client.errors import InvalidInput

__all__ = [
    "MAX_CALENDAR_BYTES",
    "CalendarEvent",
    "SchoolCalendar",
    "SchoolTerm",
    "build_terms",
    "california_holidays",
    "events_from_csv",
    "events_from_ics",
    "is_business_day",
]

MAX_CALENDAR_BYTES: Final = 2_000_000
MAX_EVENTS: Final = 5000
MAX_TERM_DAYS: Final = 400  # a school year, with room; a longer "term" is a typo

_FIRST_DAY: Final = re.compile(r"\bfirst day of (school|instruction|classes)\b", re.I)
_LAST_DAY: Final = re.compile(r"\blast day of (school|instruction|classes)\b", re.I)
_NO_SCHOOL: Final = re.compile(
    r"\bno school\b|\bno classes\b|holiday|\bbreak\b|\brecess\b|vacation|non[- ]?student"
    r"|pupil[- ]free|student[- ]free|staff development|teacher work|\bclosed\b|furlough"
    r"|non[- ]?instructional|\bno students\b",
    re.I,
)


@functools.lru_cache(maxsize=32)
def _ca_holidays(year: int) -> dict[dt.date, str]:
    return dict(holidays.country_holidays("US", subdiv="CA", years=year).items())


def california_holidays(year: int) -> dict[dt.date, str]:
    """California's state holidays in ``year`` (date -> name)."""
    return dict(_ca_holidays(year))


def is_business_day(day: dt.date) -> bool:
    """Monday to Friday and not a California state holiday (EC 49069.5 business day,
    EC 48915.1 working day)."""
    return day.weekday() < 5 and day not in _ca_holidays(day.year)


@dataclass(frozen=True)
class CalendarEvent:
    """One all-day span read from a file: ``start`` to ``end`` inclusive."""

    start: dt.date
    end: dt.date
    summary: str


@dataclass(frozen=True)
class SchoolTerm:
    """A school year: instruction from ``first_day`` to ``last_day`` less ``closed``."""

    first_day: dt.date
    last_day: dt.date
    closed: frozenset[dt.date]

    def is_school_day(self, day: dt.date) -> bool:
        return (
            self.first_day <= day <= self.last_day and day.weekday() < 5 and day not in self.closed
        )

    @property
    def school_days(self) -> int:
        span = (self.last_day - self.first_day).days + 1
        days = (self.first_day + dt.timedelta(n) for n in range(span))
        return sum(1 for d in days if self.is_school_day(d))


@dataclass(frozen=True)
class SchoolCalendar:
    """A school's loaded terms, in order, none overlapping."""

    school: str
    terms: tuple[SchoolTerm, ...]

    def is_school_day(self, day: dt.date) -> bool:
        return any(t.is_school_day(day) for t in self.terms)

    def next_school_day_after(self, day: dt.date) -> dt.date | None:
        """The first school day after ``day``; None when the calendar has none ahead
        (summer with next year's calendar not loaded)."""
        for term in self.terms:
            if term.last_day <= day:
                continue
            probe = max(day + dt.timedelta(1), term.first_day)
            while probe <= term.last_day:
                if term.is_school_day(probe):
                    return probe
                probe += dt.timedelta(1)
        return None

    def term_of(self, day: dt.date) -> SchoolTerm | None:
        return next((t for t in self.terms if t.first_day <= day <= t.last_day), None)


def _as_date(value: object, what: str) -> tuple[dt.date, bool]:
    """(the date, whether it was an all-day DATE value)."""
    if isinstance(value, dt.datetime):
        return value.date(), False
    if isinstance(value, dt.date):
        return value, True
    raise InvalidInput(f"The calendar file has an event whose {what} is not a date.")


def events_from_ics(data: bytes) -> list[CalendarEvent]:
    """The all-day events of an iCalendar file (RFC 5545), each as an inclusive span.

    Raises ``InvalidInput`` when the file is too large or is not an iCalendar file.
    """
    if len(data) > MAX_CALENDAR_BYTES:
        raise InvalidInput(f"The calendar file is larger than {MAX_CALENDAR_BYTES} bytes.")
    try:
        calendar = Calendar.from_ical(data)
    except Exception as exc:  # icalendar raises ValueError and others on bad input
        raise InvalidInput(
            "The file is not an iCalendar (.ics) file: export the school calendar "
            "as iCalendar, or give a CSV of non-school days (date,description)."
        ) from exc
    events: list[CalendarEvent] = []
    for component in calendar.walk("VEVENT"):
        if len(events) >= MAX_EVENTS:
            raise InvalidInput(f"The calendar file has more than {MAX_EVENTS} events.")
        if component.get("DTSTART") is None:
            continue
        start, all_day = _as_date(component.decoded("DTSTART"), "start")
        if not all_day:
            continue  # a timed event happens on a school day; it closes nothing
        end = start
        if component.get("DTEND") is not None:
            stop, _ = _as_date(component.decoded("DTEND"), "end")
            end = max(start, stop - dt.timedelta(1))  # DTEND of a DATE event is exclusive
        elif component.get("DURATION") is not None:
            length = component.decoded("DURATION")
            if isinstance(length, dt.timedelta):
                end = max(start, start + length - dt.timedelta(1))
        if (end - start).days > MAX_TERM_DAYS:
            raise InvalidInput("The calendar file has an event longer than a school year.")
        summary = str(component.get("SUMMARY", ""))
        categories = component.get("CATEGORIES")
        if categories is not None:
            cats = categories if isinstance(categories, list) else [categories]
            names = [str(c) for cat in cats for c in getattr(cat, "cats", [cat])]
            summary = " ".join([summary, *names]).strip()
        events.append(CalendarEvent(start, end, summary[:200]))
    if not events:
        raise InvalidInput("The calendar file has no all-day events.")
    return events


def events_from_csv(text: str) -> list[CalendarEvent]:
    """Non-school days from a CSV with a header: ``date`` (YYYY-MM-DD), optional
    ``end_date`` (a span, inclusive) and optional ``description``.

    Every line is a non-school day, except one described as the first or last
    day of school (those bound the term). Raises ``InvalidInput`` naming the line.
    """
    if len(text) > MAX_CALENDAR_BYTES:
        raise InvalidInput(f"The calendar file is larger than {MAX_CALENDAR_BYTES} bytes.")
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "date" not in fields:
        raise InvalidInput(
            "The CSV has no 'date' column: its first line must be a header such as "
            "date,end_date,description."
        )
    reader.fieldnames = fields
    events: list[CalendarEvent] = []
    for row in reader:
        line = reader.line_num
        if len(events) >= MAX_EVENTS:
            raise InvalidInput(f"The calendar file has more than {MAX_EVENTS} lines.")
        raw = (row.get("date") or "").strip()
        if not raw:
            continue
        start = _csv_date(raw, line, "date")
        end_raw = (row.get("end_date") or "").strip()
        end = _csv_date(end_raw, line, "end_date") if end_raw else start
        if end < start or (end - start).days > MAX_TERM_DAYS:
            raise InvalidInput(f"Line {line}: end_date is before date or too far after it.")
        description = (row.get("description") or "").strip()[:200]
        # A line of a non-school-day CSV closes the school unless it bounds a term.
        if not (_FIRST_DAY.search(description) or _LAST_DAY.search(description)):
            description = f"{description} (no school)".strip()
        events.append(CalendarEvent(start, end, description))
    if not events:
        raise InvalidInput("The CSV lists no days.")
    return events


def _csv_date(raw: str, line: int, column: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"Line {line}: {column} is not a date (YYYY-MM-DD).") from None


def _days(event: CalendarEvent) -> Iterable[dt.date]:
    for n in range((event.end - event.start).days + 1):
        yield event.start + dt.timedelta(n)


def build_terms(
    events: Sequence[CalendarEvent],
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
) -> tuple[SchoolTerm, ...]:
    """The terms the events describe; ``first_day``/``last_day`` (given together)
    make one term and override the events' first/last-day markers.

    Raises ``InvalidInput`` when no term can be made or the terms overlap.
    """
    if (first_day is None) != (last_day is None):
        raise InvalidInput("Give both the first and the last day of school, or neither.")
    if first_day is not None and last_day is not None:
        bounds = [(first_day, last_day)]
    else:
        firsts = sorted(e.start for e in events if _FIRST_DAY.search(e.summary))
        lasts = sorted(e.start for e in events if _LAST_DAY.search(e.summary))
        if not firsts or len(firsts) != len(lasts):
            raise InvalidInput(
                "The calendar does not say when school starts and ends: it needs a "
                "'First day of school' and a 'Last day of school' event for each year, "
                "or give --first-day and --last-day."
            )
        bounds = list(zip(firsts, lasts, strict=True))
    terms: list[SchoolTerm] = []
    for first, last in bounds:
        if last < first or (last - first).days > MAX_TERM_DAYS:
            raise InvalidInput(
                f"A school year from {first} to {last} is not possible: check the first "
                "and last days of school."
            )
        if terms and first <= terms[-1].last_day:
            raise InvalidInput("The calendar's school years overlap.")
        closed = frozenset(
            day
            for e in events
            if _NO_SCHOOL.search(e.summary)
            and not (_FIRST_DAY.search(e.summary) or _LAST_DAY.search(e.summary))
            for day in _days(e)
            if first <= day <= last
        )
        terms.append(SchoolTerm(first, last, closed))
    return tuple(terms)
