"""Matching a request's student to ours: SSID first, then ranked demographics."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine

from rt_server.core.matching import MAX_CANDIDATES, name_key, rank_candidates
from rt_server.core.model import StudentIdentity, StudentRecord
from rt_server.store import students
from rt_server.store.candidates import match_student


def _add(
    engine: Engine,
    local_id: str,
    first: str,
    last: str,
    birth: str,
    gender: str = "F",
    ssid: str | None = None,
    middle: str = "",
) -> str:
    student: dict[str, Any] = {
        "local_id": local_id,
        "legal_first_name": first,
        "legal_middle_name": middle,
        "legal_last_name": last,
        "birth_date": birth,
        "gender": gender,
        "ssid": ssid,
    }
    return students.add_student(engine, student, actor="t")


def _who(
    first: str | None = "María",
    last: str | None = "NUNEZ",
    birth: str | None = "2010-05-17",
    gender: str | None = "F",
    ssid: str | None = None,
    middle: str | None = None,
) -> StudentIdentity:
    return StudentIdentity(
        ssid, first, middle, last, dt.date.fromisoformat(birth) if birth else None, gender
    )


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Nuñez", "nunez"),
        ("NUNEZ", "nunez"),
        ("O'Brien", "obrien"),
        ("Đặng", "dang"),
        ("Østergaard", "ostergaard"),
        ("López-Ramírez", "lopezramirez"),
        ("St. John", "stjohn"),
        ("Zoë", "zoe"),
        ("Straße", "strasse"),
        ("", ""),
        (None, ""),
    ],
)
def test_name_key_folds_case_accents_and_punctuation(name: str | None, key: str) -> None:
    assert name_key(name) == key


def test_ssid_match_is_exact_and_first(engine: Engine, student_id: str) -> None:
    _add(engine, "S000002", "Maria", "Nunez", "2010-05-17")  # a namesake twin
    found = match_student(engine, _who(ssid="1234567890"))
    assert found[0].student.local_id == student_id
    assert found[0].local_id == student_id
    assert (found[0].confidence, found[0].exact, found[0].why) == (100, True, "SSID matches")
    assert [c.exact for c in found[1:]] == [False]
    assert found[1].confidence < 100


def test_ssid_match_notes_disagreeing_demographics(engine: Engine, student_id: str) -> None:
    (found,) = match_student(engine, _who(ssid="1234567890", last="Smith", birth="2011-01-01"))
    assert found.exact and found.why == "SSID matches; but last name and birth date differ"


def test_accent_and_case_insensitive_candidates(engine: Engine, student_id: str) -> None:
    (found,) = match_student(engine, _who(first="MARIA", last="NUNEZ"))
    assert found.student.local_id == student_id and not found.exact
    assert found.confidence == 95
    assert found.why == "last name, birth date, gender, first name match"


def test_ranking_and_why(engine: Engine) -> None:
    _add(engine, "A1", "Maria", "Nunez", "2010-05-17")  # all match
    _add(engine, "A2", "Mariana", "Nunez", "2010-05-17")  # first name similar
    _add(engine, "A3", "Maria", "Nunez", "2010-05-18")  # birth date differs
    _add(engine, "A4", "Maria", "Nunez-Garcia", "2010-05-17")  # hyphenated last name
    _add(engine, "A5", "Pedro", "Smith", "2010-05-17", gender="M")  # only the birth date
    _add(engine, "A6", "Maria", "Nunez", "2010-05-17", gender="M")  # gender differs
    _add(engine, "A7", "Maria", "Nunez", "2010-05-17", ssid="9999999999")  # another SSID
    found = match_student(engine, _who(first="Maria", ssid="1111111111"))
    ids = [c.student.local_id for c in found]
    assert ids[0] == "A1" and found[0].confidence == 95
    assert "A5" not in ids  # 35 + 0 + 0: below the bar
    by_id = {c.student.local_id: c for c in found}
    assert by_id["A2"].why == "last name, birth date, gender match; first name similar"
    assert by_id["A4"].why == "birth date, gender, first name match; last name partly matches"
    assert by_id["A3"].confidence < by_id["A1"].confidence
    assert by_id["A6"].confidence == 85
    assert by_id["A7"].confidence == 95 - 25 and by_id["A7"].why.endswith("but SSID differs")
    assert [c.confidence for c in found] == sorted((c.confidence for c in found), reverse=True)


def test_day_month_swap_is_a_partial_match(engine: Engine) -> None:
    _add(engine, "B1", "Maria", "Nunez", "2010-05-07")
    (found,) = match_student(engine, _who(first="Maria", birth="2010-07-05"))
    assert "birth date with day and month swapped" in found.why


def test_never_more_than_ten(engine: Engine) -> None:
    for i in range(15):
        _add(engine, f"T{i:02d}", "Maria", "Nunez", "2010-05-17")
    found = match_student(engine, _who())
    assert len(found) == MAX_CANDIDATES
    assert [c.student.local_id for c in found] == [f"T{i:02d}" for i in range(10)]  # ties by id


def test_no_candidates(engine: Engine, student_id: str) -> None:
    assert match_student(engine, _who(first="Kai", last="Okafor", birth="2001-01-01")) == []
    assert match_student(engine, _who(first=None, last=None, birth=None)) == []
    assert match_student(engine, _who(ssid="0000000000", last="X", birth="1999-09-09")) == []


def _record(
    local_id: str, first: str, last: str, birth: str, ssid: str | None = None
) -> StudentRecord:
    return StudentRecord(
        local_id=local_id,
        ssid=ssid,
        legal_first_name=first,
        legal_middle_name=None,
        legal_last_name=last,
        birth_date=dt.date.fromisoformat(birth),
        gender="F",
        school=None,
        created_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    )


def test_ranking_is_pure_on_plain_records() -> None:
    by_ssid = _record("S1", "Maria", "Smith", "2010-05-17", ssid="1234567890")
    others = [
        by_ssid,  # found again by birth date: proposed once, as the SSID match
        _record("S3", "Mariana", "Nuñez", "2010-05-17"),
        _record("S2", "María", "NUNEZ", "2010-05-17"),
        _record("S4", "Pedro", "Okafor", "2010-05-17"),  # birth date only: noise
    ]
    found = rank_candidates(_who(ssid="1234567890"), by_ssid, others)
    assert [(c.local_id, c.confidence, c.exact) for c in found] == [
        ("S1", 100, True),
        ("S2", 95, False),
        ("S3", 88, False),
    ]
    assert found[0].why.startswith("SSID matches; but last name")
    assert rank_candidates(_who(), None, []) == []
