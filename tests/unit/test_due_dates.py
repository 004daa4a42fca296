"""Due dates of inbound requests (EC 49068, 49069.5, 48915.1/48918) and the notices they
call for, on a real generated iCalendar file, across weekends, holidays, breaks and summer."""

from __future__ import annotations

import datetime as dt

import pytest

from rt_client.errors import InvalidInput
from rt_server.core.calendars import (
    SchoolCalendar,
    build_terms,
    events_from_csv,
    events_from_ics,
    is_business_day,
)
from rt_server.core.due_dates import (
    DueRule,
    NoticeKind,
    OpenRequest,
    RequestFacts,
    deadlines,
    due_date,
    notices_due,
)
from tests.harness.calendars import ManualClock, noon_pacific, school_calendar_ics

D = dt.date
SCHOOL = "01611920130229"


def calendar(*, next_year: bool = False) -> SchoolCalendar:
    events = events_from_ics(school_calendar_ics(next_year=next_year))
    return SchoolCalendar(SCHOOL, build_terms(events))


def records_due(received: dt.date, cal: SchoolCalendar | None, **facts: bool) -> dt.date | None:
    return due_date(RequestFacts(noon_pacific(received), SCHOOL, **facts), cal).due_on


def test_the_ics_file_gives_a_term_with_its_breaks_closed_and_its_events_open() -> None:
    (term,) = calendar().terms
    assert (term.first_day, term.last_day) == (D(2026, 8, 12), D(2027, 6, 3))
    assert D(2026, 12, 21) in term.closed and D(2027, 1, 1) in term.closed  # winter break
    assert D(2026, 9, 7) in term.closed  # Labor Day - No School
    assert not term.is_school_day(D(2026, 12, 24))
    assert term.is_school_day(D(2026, 12, 18))  # a minimum day is a school day
    assert term.is_school_day(D(2026, 9, 10))  # a timed staff meeting closes nothing
    assert not term.is_school_day(D(2026, 9, 12))  # a Saturday
    assert len(calendar(next_year=True).terms) == 2


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (D(2026, 10, 6), D(2026, 10, 20)),  # two plain weeks
        (D(2026, 9, 4), D(2026, 9, 21)),  # a Friday, then Labor Day
        (D(2026, 9, 5), D(2026, 9, 21)),  # a Saturday counts from Tuesday too
        (D(2026, 11, 18), D(2026, 12, 9)),  # Thanksgiving break
        (D(2026, 12, 15), D(2027, 1, 12)),  # winter break: 3 days before, 7 after
        (D(2027, 3, 25), D(2027, 4, 15)),  # spring break: Friday, then 9 after
    ],
)
def test_ec_49068_counts_ten_schooldays_of_the_schools_calendar(
    received: dt.date, due: dt.date
) -> None:
    found = due_date(RequestFacts(noon_pacific(received), SCHOOL), calendar())
    assert (found.rule, found.due_on) == (DueRule.EC_49068, due)


def test_the_day_of_receipt_is_californias_day_not_utcs() -> None:
    evening = dt.datetime(2026, 10, 7, 5, 30, tzinfo=dt.UTC)  # 22:30 on Oct 6 in California
    assert due_date(RequestFacts(evening, SCHOOL), calendar()).due_on == D(2026, 10, 20)


def test_in_summer_the_schoolday_clock_waits_for_the_next_school_year() -> None:
    found = due_date(RequestFacts(noon_pacific(D(2027, 6, 20)), SCHOOL), calendar(next_year=True))
    assert found.due_on == D(2027, 8, 24)  # 2027-08-11 is day 1
    assert "waited for the next school day, 2027-08-11" in found.note


def test_in_summer_without_next_years_calendar_the_clock_waits_and_says_so() -> None:
    found = due_date(RequestFacts(noon_pacific(D(2027, 6, 20)), SCHOOL), calendar())
    assert found.due_on is None
    assert "Waiting for the next school day" in found.note


def test_a_count_that_runs_past_the_last_day_of_school_resumes_in_the_next_year() -> None:
    # 2027-05-28, 06-01, 06-02, 06-03 (Memorial Day closed), then six in August.
    assert records_due(D(2027, 5, 27), calendar(next_year=True)) == D(2027, 8, 18)
    found = due_date(RequestFacts(noon_pacific(D(2027, 5, 27)), SCHOOL), calendar())
    assert found.due_on is None and "4 of 10 counted" in found.note


def test_without_a_calendar_schooldays_are_counted_as_business_days() -> None:
    found = due_date(RequestFacts(noon_pacific(D(2026, 11, 20)), SCHOOL), None)
    assert found.due_on == D(2026, 12, 8)  # Thanksgiving and the day after are state holidays
    assert "No calendar is loaded" in found.note


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (D(2026, 10, 8), D(2026, 10, 12)),  # Thursday -> Monday
        (D(2026, 11, 25), D(2026, 12, 1)),  # Thanksgiving and the day after
        (D(2026, 12, 22), D(2026, 12, 24)),  # winter break is not a business holiday
        (D(2027, 7, 2), D(2027, 7, 7)),  # summer; Independence Day observed on the 5th
    ],
)
def test_ec_49069_5_a_foster_youths_records_are_due_in_two_business_days(
    received: dt.date, due: dt.date
) -> None:
    found = due_date(RequestFacts(noon_pacific(received), SCHOOL, foster_youth=True), calendar())
    assert (found.rule, found.due_on) == (DueRule.EC_49069_5, due)


def test_ec_48915_1_expulsion_information_is_due_in_five_working_days() -> None:
    facts = RequestFacts(noon_pacific(D(2026, 12, 18)), SCHOOL, discipline_requested=True)
    found = due_date(facts, calendar())
    assert (found.rule, found.due_on) == (DueRule.EC_48915_1, D(2026, 12, 28))  # over Christmas
    rules = {d.rule: d.due_on for d in deadlines(facts, calendar())}
    assert rules[DueRule.EC_49068] == D(2027, 1, 15)  # the records: schooldays after the break


def test_business_days_skip_californias_state_holidays() -> None:
    assert not is_business_day(D(2027, 3, 31))  # Cesar Chavez Day
    assert not is_business_day(D(2026, 11, 27))
    assert is_business_day(D(2026, 12, 24))


def test_a_reminder_and_an_overdue_notice_once_each_as_the_clock_moves_through_the_year() -> None:
    cal = calendar(next_year=True)
    clock = ManualClock(noon_pacific(D(2026, 12, 15)))
    due = due_date(RequestFacts(clock(), SCHOOL), cal)
    item = OpenRequest("req-1", SCHOOL, due.due_on, due.rule)
    seen: dict[str, dt.date] = {}
    while clock() < noon_pacific(D(2027, 2, 1)):
        for notice in notices_due([item], clock(), {SCHOOL: cal}):
            seen.setdefault(notice.dedupe_key, clock().date())
        clock.advance(hours=6)
    assert seen == {
        "REMINDER:req-1:2027-01-12": D(2027, 1, 7),  # 3 schooldays away: 8, 11, 12
        "OVERDUE:req-1:2027-01-12": D(2027, 1, 13),
    }


def test_a_request_waiting_for_the_school_year_gets_no_notice() -> None:
    item = OpenRequest("req-2", SCHOOL, None, DueRule.EC_49068)
    assert notices_due([item], noon_pacific(D(2027, 7, 1)), {}) == []
    overdue = OpenRequest("req-3", SCHOOL, D(2027, 6, 30), DueRule.EC_49069_5)
    (notice,) = notices_due([overdue], noon_pacific(D(2027, 7, 1)), {})
    assert notice.kind is NoticeKind.OVERDUE


def test_a_csv_of_non_school_days_gives_the_same_calendar() -> None:
    text = (
        "date,end_date,description\n"
        "2026-08-12,,First day of school\n"
        "2026-09-07,,Labor Day\n"
        "2026-11-11,,Veterans Day\n"
        "2026-11-23,2026-11-27,Thanksgiving\n"
        "2026-12-21,2027-01-01,Winter\n"
        "2027-01-18,,\n"
        "2027-02-15,,\n"
        "2027-03-29,2027-04-02,Spring\n"
        "2027-05-31,,\n"
        "2027-06-03,,Last day of school\n"
    )
    from_csv = SchoolCalendar(SCHOOL, build_terms(events_from_csv(text)))
    assert from_csv.terms == calendar().terms


@pytest.mark.parametrize(
    "data",
    [b"", b"not a calendar", b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n", b"\xff" * 10],
)
def test_a_file_that_is_not_a_calendar_is_refused_with_a_clear_message(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        events_from_ics(data)


def test_a_calendar_without_first_and_last_days_asks_for_them() -> None:
    events = events_from_csv("date,description\n2026-09-07,Labor Day\n")
    with pytest.raises(InvalidInput, match="--first-day"):
        build_terms(events)
    (term,) = build_terms(events, D(2026, 8, 12), D(2027, 6, 3))
    assert term.closed == {D(2026, 9, 7)}


@pytest.mark.parametrize(
    "text", ["day\n2026-01-01\n", "date\nnot-a-date\n", "date,end_date\n2026-02-01,2026-01-01\n"]
)
def test_a_bad_csv_is_refused_naming_the_line(text: str) -> None:
    with pytest.raises(InvalidInput):
        events_from_csv(text)
