"""A real school calendar for the tests: an iCalendar file (RFC 5545) made with
``icalendar``, as a district publishes one, and a clock the tests move.

School year 2026-27 (and optionally 2027-28): the first and last days of school,
state holidays marked "No School", a Thanksgiving break, a winter break from
2026-12-21 to 2027-01-01 and a spring break; a minimum day and a timed
staff meeting that close nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from icalendar import Calendar, Event

D = dt.date

YEAR_2026_27: list[tuple[dt.date, dt.date | None, str]] = [
    (D(2026, 8, 12), None, "First Day of School"),
    (D(2026, 9, 7), None, "Labor Day - No School"),
    (D(2026, 11, 11), None, "Veterans Day Holiday"),
    (D(2026, 11, 23), D(2026, 11, 27), "Thanksgiving Break"),
    (D(2026, 12, 18), None, "Minimum Day"),
    (D(2026, 12, 21), D(2027, 1, 1), "Winter Break"),
    (D(2027, 1, 18), None, "Martin Luther King Jr. Day - No School"),
    (D(2027, 2, 15), None, "Presidents' Day - No School"),
    (D(2027, 3, 29), D(2027, 4, 2), "Spring Break"),
    (D(2027, 5, 31), None, "Memorial Day - No School"),
    (D(2027, 6, 3), None, "Last Day of School"),
]
YEAR_2027_28: list[tuple[dt.date, dt.date | None, str]] = [
    (D(2027, 8, 11), None, "First Day of School"),
    (D(2027, 9, 6), None, "Labor Day - No School"),
    (D(2027, 12, 20), D(2027, 12, 31), "Winter Break"),
    (D(2028, 6, 1), None, "Last Day of School"),
]


def school_calendar_ics(*, next_year: bool = False) -> bytes:
    cal = Calendar()
    cal.add("prodid", "-//Test Unified School District//Instructional Calendar//EN")
    cal.add("version", "2.0")
    days = YEAR_2026_27 + (YEAR_2027_28 if next_year else [])
    for n, (start, last, summary) in enumerate(days):
        event = Event()
        event.add("uid", f"day-{n}@test.example")
        event.add("dtstamp", dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
        event.add("summary", summary)
        event.add("dtstart", start)
        event.add("dtend", (last or start) + dt.timedelta(1))  # exclusive (RFC 5545)
        cal.add_component(event)
    night = Event()
    night.add("uid", "btsn@test.example")
    night.add("dtstamp", dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    night.add("summary", "Staff Development meeting, after school")
    night.add("dtstart", dt.datetime(2026, 9, 10, 18, 0, tzinfo=dt.UTC))
    night.add("dtend", dt.datetime(2026, 9, 10, 20, 0, tzinfo=dt.UTC))
    cal.add_component(night)
    return cal.to_ical()


def write_school_calendar(folder: Path, *, next_year: bool = False) -> Path:
    path = folder / "instructional-calendar.ics"
    path.write_bytes(school_calendar_ics(next_year=next_year))
    return path


def noon_pacific(day: dt.date) -> dt.datetime:
    """``day`` at 20:00 UTC: midday or 1 p.m. in California, the same day."""
    return dt.datetime(day.year, day.month, day.day, 20, 0, tzinfo=dt.UTC)


@dataclass
class ManualClock:
    """A Clock the test moves (rt_server.core.due_dates.Clock)."""

    at: dt.datetime = field(default_factory=lambda: dt.datetime(2026, 8, 1, 20, tzinfo=dt.UTC))

    def __call__(self) -> dt.datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += dt.timedelta(**delta)
