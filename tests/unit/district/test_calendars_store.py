"""School calendars in the database: a load replaces the years it overlaps and keeps the others."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from rt_server.core.calendars import SchoolTerm, build_terms, events_from_ics
from rt_server.store import calendars
from tests.harness.calendars import school_calendar_ics

SCHOOL = "01611920130229"
D = dt.date


def test_a_load_replaces_the_overlapping_year_and_keeps_the_others(
    engine: Engine, now: dt.datetime
) -> None:
    assert calendars.calendar_of(engine, SCHOOL) is None
    both = build_terms(events_from_ics(school_calendar_ics(next_year=True)))
    calendars.save_calendar(engine, SCHOOL, both, source="year.ics", actor="ada", now=now)
    stored = calendars.calendar_of(engine, SCHOOL)
    assert stored is not None and stored.terms == both

    corrected = SchoolTerm(D(2026, 8, 13), D(2027, 6, 4), frozenset({D(2026, 9, 7)}))
    calendars.save_calendar(engine, SCHOOL, [corrected], source="fix.csv", actor="ada", now=now)
    stored = calendars.calendar_of(engine, SCHOOL)
    assert stored is not None and stored.terms == (corrected, both[1])
    (loaded,) = calendars.loaded_calendars(engine)
    assert (loaded.source, loaded.loaded_by) == ("fix.csv", "ada")
    assert calendars.calendar_of(engine, "19647331932334") is None
