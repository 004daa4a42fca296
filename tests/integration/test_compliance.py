"""The law's clocks and flags on two real running districts, through the ``rt`` CLI.

An injected clock (the same ``Clock`` on both districts) puts the requests on
chosen days; the prior district's calendar is a real generated ``.ics`` file
loaded with ``rt calendar load``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import grpc
from sqlalchemy import select

from protos.rt.v1 import common_pb2, registrar_pb2
from rt_server.flows import compliance
from rt_server.store.schema import AUDIT_LOG, COMPLIANCE_NOTICES, STUDENT_FLAGS
from tests.harness.calendars import write_school_calendar
from tests.harness.cli import Rt
from tests.harness.flow import (
    Status,
    add_student,
    assert_unchanged,
    get,
    refused,
    settle,
    small_records,
    snapshot,
    wait_status,
)
from tests.harness.world import PRIOR_SCHOOL, MutableClock, Pair, Side

# Wednesday before Thanksgiving, midday in California.
BEFORE_THANKSGIVING = dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.UTC)


def _same_clock(p: Pair, at: dt.datetime) -> MutableClock:
    clock = MutableClock(at)
    for side in (p.a, p.b):
        assert side.server is not None and side.server.district is not None
        side.server.district.clock = clock
    return clock


def _request(rt: Rt, p: Pair, *options: str) -> str:
    made = rt(p.b, "request", "create", "--student", "B1", "--prior-school", PRIOR_SCHOOL,
              *options, "--json")  # fmt: skip
    assert made.code == 0, made.err
    request_id = str(json.loads(made.out)["summary"]["request_id"])
    wait_status(p.a, request_id, Status.PENDING)
    return request_id


def _flags(side: Side, local_id: str) -> set[str]:
    with side.engine.connect() as conn:
        rows = conn.execute(
            select(STUDENT_FLAGS.c.flag).where(STUDENT_FLAGS.c.student_local_id == local_id)
        )
        return {r.flag for r in rows}


def _audit(side: Side, action: str) -> list[str]:
    with side.engine.connect() as conn:
        rows = conn.execute(select(AUDIT_LOG.c.detail).where(AUDIT_LOG.c.action == action))
        return [r.detail for r in rows]


def test_a_foster_youth_request_is_due_in_two_business_days_and_approved_despite_withheld_grades(
    districts: Pair, rt: Rt, tmp_path: Path
) -> None:
    p = districts
    _same_clock(p, BEFORE_THANKSGIVING)
    assert rt(p.a, "calendar", "load", "--school", PRIOR_SCHOOL,
              str(write_school_calendar(tmp_path))).code == 0  # fmt: skip
    add_student(p.a, "A1", small_records(1, 2))
    add_student(p.b, "B1")
    flagged = rt(p.a, "student", "flag", "A1", "withhold-grades")
    assert flagged.code == 0 and "WITHHOLD_GRADES" in _flags(p.a, "A1"), flagged.err

    request_id = _request(rt, p, "--foster-youth")

    listed = {r["request_id"]: r for r in json.loads(rt(p.a, "requests", "--json").out)}
    # Thanksgiving and the day after are state holidays; Monday, Tuesday are the two.
    assert listed[request_id]["due_on"] == "2026-12-01"
    assert listed[request_id]["due_rule"] == "EC 49069.5"
    shown = rt(p.a, "show", request_id[:8])
    assert "2026-12-01 (EC 49069.5)" in shown.out and "foster youth" in shown.out
    assert request_id[:8] in rt(p.a, "due").out

    refusal = rt(p.a, "reject", request_id, "--reason", "records-withheld")
    assert refusal.code != 0 and "EC 49069.5" in refusal.err
    done = rt(p.a, "approve", request_id, "--student", "A1")
    assert done.code == 0, done.err
    received = wait_status(p.b, request_id, Status.DATA_RECEIVED)
    settle(p.a, p.b)
    # Never for a foster youth (EC 49069.5): the withholding does not travel.
    assert not get(p.b, request_id).grades_withheld and received.summary.ssid
    assert _flags(p.b, "B1") == set()
    assert "WITHHOLD_GRADES" in _flags(p.a, "A1")


def test_withheld_grades_travel_with_the_transfer_and_are_kept_at_the_new_district(
    districts: Pair, rt: Rt
) -> None:
    p = districts
    add_student(p.a, "A1", small_records(2, 2))
    add_student(p.b, "B1")
    before = snapshot(p.a)
    unknown = rt(p.a, "student", "flag", "A1", "expelled")
    assert unknown.code != 0 and "WITHHOLD_GRADES, MISSING_CHILD" in unknown.err
    nobody = rt(p.a, "student", "flag", "NOBODY", "withhold-grades")
    assert nobody.code != 0 and "no student" in nobody.err
    assert_unchanged(before, snapshot(p.a))
    assert rt(p.a, "student", "flag", "A1", "withhold-grades").code == 0
    request_id = _request(rt, p)
    assert rt(p.a, "approve", request_id, "--student", "A1").code == 0
    wait_status(p.b, request_id, Status.DATA_RECEIVED)
    settle(p.a, p.b)
    assert get(p.b, request_id).grades_withheld
    assert "grades withheld" in rt(p.b, "show", request_id).out
    assert _flags(p.b, "B1") == {"WITHHOLD_GRADES"}  # EC 48904.3: kept here
    student = rt(p.b, "student", "show", "B1", "--json")
    assert json.loads(student.out)["flags"][0]["source"] == f"district {p.a.code}"
    assert "grades withheld (EC 48904.3)" in rt(p.b, "student", "show", "B1").out


def test_a_request_for_a_missing_child_holds_approval_and_alerts_law_enforcement(
    districts: Pair, rt: Rt
) -> None:
    p = districts
    add_student(p.a, "A1", small_records(3, 2))
    add_student(p.b, "B1")
    assert rt(p.a, "student", "flag", "A1", "missing-child").code == 0

    request_id = _request(rt, p)

    held = get(p.a, request_id)
    assert "EC 49068.6" in held.held_reason
    with p.a.engine.connect() as conn:
        (notice,) = conn.execute(select(COMPLIANCE_NOTICES)).mappings().all()
    assert notice["kind"] == "MISSING_CHILD_ALERT" and notice["request_id"] == request_id
    assert p.b.code in notice["detail"] and held.requesting_school in notice["detail"]
    (alert,) = _audit(p.a, "missing_child.alert")
    assert p.b.code in alert

    before = snapshot(p.a)
    details = refused(
        p.a.rpc.ApproveRequest,
        registrar_pb2.ApproveRequestRequest(request_id=request_id, student_local_id="A1"),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "EC 49068.6" in details
    after = snapshot(p.a)
    # Held: no decision, no delivery; only the hold's audit row was added.
    changed = {n for n in before if before[n] != after[n]}
    assert changed <= {"audit_log"}
    assert get(p.b, request_id).summary.status == Status.PENDING
    with p.a.engine.connect() as conn:
        assert len(conn.execute(select(COMPLIANCE_NOTICES)).all()) == 1  # alerted once

    # Law enforcement says the records may go: the flag is cleared, approval goes ahead.
    assert rt(p.a, "student", "flag", "A1", "missing-child", "--clear").code == 0
    assert rt(p.a, "approve", request_id, "--student", "A1").code == 0
    wait_status(p.b, request_id, Status.DATA_RECEIVED)
    assert get(p.a, request_id).held_reason == ""


def test_a_request_for_discipline_records_must_be_answered_and_the_teachers_duty_recorded(
    districts: Pair, rt: Rt
) -> None:
    p = districts
    _same_clock(p, dt.datetime(2026, 12, 18, 20, 0, tzinfo=dt.UTC))
    add_student(p.a, "A1", small_records(4, 2))
    add_student(p.b, "B1")
    request_id = _request(rt, p, "--discipline-records")
    inbound = get(p.a, request_id)
    assert inbound.discipline_records_requested
    # 5 working days (EC 48915.1/48918), over Christmas; no calendar loaded is said.
    assert (inbound.summary.due_on, inbound.summary.due_rule) == (
        "2026-12-28",
        "EC 48915.1/48918",
    )

    before = snapshot(p.a)
    unanswered = rt(p.a, "approve", request_id, "--student", "A1")
    assert unanswered.code != 0 and "48201(b)" in unanswered.err
    assert_unchanged(before, snapshot(p.a))

    done = rt(p.a, "approve", request_id, "--student", "A1", "--discipline-records", "sent")
    assert done.code == 0, done.err
    wait_status(p.b, request_id, Status.DATA_RECEIVED)
    settle(p.a, p.b)
    outbound = get(p.b, request_id)
    assert outbound.discipline_answer == common_pb2.DISCIPLINE_RECORDS_SENT
    assert outbound.teachers_to_be_informed
    assert "inform the student's teachers" in rt(p.b, "show", request_id).out
    assert _audit(p.b, "duty.inform_teachers")
    assert get(p.a, request_id).discipline_answer == common_pb2.DISCIPLINE_RECORDS_SENT


def test_calendars_load_show_and_redate_open_requests_and_a_bad_file_changes_nothing(
    districts: Pair, rt: Rt, tmp_path: Path
) -> None:
    p = districts
    clock = _same_clock(p, dt.datetime(2026, 12, 15, 20, 0, tzinfo=dt.UTC))
    add_student(p.a, "A1", small_records(5, 2))
    add_student(p.b, "B1")
    shown = rt(p.a, "calendar", "show")
    assert "no calendar loaded" in shown.out and "business days" in shown.out
    request_id = _request(rt, p)
    # Without a calendar, schooldays are business days: 16..24, 28, 29 (25 Christmas).
    assert get(p.a, request_id).summary.due_on == "2026-12-30"

    bad = tmp_path / "calendar.ics"
    bad.write_bytes(b"BEGIN:VCALENDAR\r\nthis is not a calendar")
    before = snapshot(p.a)
    refusal = rt(p.a, "calendar", "load", "--school", PRIOR_SCHOOL, str(bad))
    assert refusal.code != 0 and "iCalendar" in refusal.err
    good = str(write_school_calendar(tmp_path))
    for args, says in [
        (("--school", PRIOR_SCHOOL, str(tmp_path / "absent.ics")), "cannot read"),
        (("--school", "01611920130229", good), "not one of this district's schools"),
        (("--school", PRIOR_SCHOOL, good, "--first-day", "2026-08-12"), "both"),
        (("--school", PRIOR_SCHOOL, str(tmp_path)), "cannot read"),
    ]:
        refused_load = rt(p.a, "calendar", "load", *args)
        assert refused_load.code != 0 and says in refused_load.err, refused_load.err
    assert_unchanged(before, snapshot(p.a))

    loaded = rt(p.a, "calendar", "load", "--school", PRIOR_SCHOOL,
                str(write_school_calendar(tmp_path, next_year=True)), "--json")  # fmt: skip
    assert loaded.code == 0, loaded.err
    assert json.loads(loaded.out)["requests_redated"] == 1
    # The winter break is not school: 16, 17, 18, then Jan 4..8, 11, 12.
    assert get(p.a, request_id).summary.due_on == "2027-01-12"
    assert p.a.server is not None and p.a.server.district is not None
    assert compliance.notices_due(p.a.server.district) == []

    # The clock moves on: 3 schooldays before, a reminder is due; after, overdue.
    clock.set(dt.datetime(2027, 1, 7, 20, 0, tzinfo=dt.UTC))
    (reminder,) = compliance.notices_due(p.a.server.district)
    assert reminder.dedupe_key == f"REMINDER:{request_id}:2027-01-12"
    assert rt(p.a, "due", "--overdue", "--json").out.strip() == "[]"
    clock.set(dt.datetime(2027, 1, 13, 20, 0, tzinfo=dt.UTC))
    (overdue,) = compliance.notices_due(p.a.server.district)
    assert overdue.kind == "OVERDUE"
    late = rt(p.a, "due", "--overdue")
    assert request_id[:8] in late.out and "OVERDUE 2027-01-12 (EC 49068)" in late.out
    table = rt(p.a, "calendar", "show", "--days")
    assert "2026-08-12" in table.out and "2027-08-11" in table.out and "2026-12-21" in table.out


def test_in_summer_the_schoolday_clock_waits_and_says_so_until_next_year_is_loaded(
    districts: Pair, rt: Rt, tmp_path: Path
) -> None:
    p = districts
    _same_clock(p, dt.datetime(2027, 6, 21, 20, 0, tzinfo=dt.UTC))
    this_year = tmp_path / "this-year"
    this_year.mkdir()
    assert rt(p.a, "calendar", "load", "--school", PRIOR_SCHOOL,
              str(write_school_calendar(this_year))).code == 0  # fmt: skip
    assert "no school day ahead" in rt(p.a, "calendar", "show").out
    add_student(p.a, "A1", small_records(6, 2))
    add_student(p.b, "B1")
    request_id = _request(rt, p)
    waiting = get(p.a, request_id).summary
    assert (waiting.due_on, waiting.due_rule) == ("", "EC 49068")
    assert "Waiting for the next school day" in waiting.due_note
    assert "waiting (EC 49068)" in rt(p.a, "due").out

    assert rt(p.a, "calendar", "load", "--school", PRIOR_SCHOOL,
              str(write_school_calendar(tmp_path, next_year=True))).code == 0  # fmt: skip
    # The first day of school, 2027-08-11, is day 1 of 10.
    assert get(p.a, request_id).summary.due_on == "2027-08-24"
