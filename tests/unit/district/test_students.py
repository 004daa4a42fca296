"""Students (``rt_server.store.students``): enrolment with records, and lookup.

A refused enrolment changes nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine

from protos.rt.v1 import common_pb2, records_pb2
from rt_client.errors import Duplicate, InvalidInput, NotFound
from rt_server.store import students
from tests.unit.district._store_rows import audit_rows

Snap = Callable[[], Any]


def test_add_student_with_generated_id_and_records(engine: Engine, now: dt.datetime) -> None:
    batch = records_pb2.RecordBatch(table=common_pb2.IMM)
    batch.imm.extend(
        [
            records_pb2.ImmRow(sq=9, vc="03", dt="2011-05-01", src="SIS"),
            records_pb2.ImmRow(sq=4, vc="21"),
        ]
    )
    local_id = students.add_student(
        engine,
        {
            "local_id": "",
            "ssid": "",
            "legal_first_name": "  Zoë ",
            "legal_middle_name": "",
            "legal_last_name": "O'Brien",
            "birth_date": dt.date(2012, 2, 29),
            "gender": "x",
            "school": "",
        },
        [batch],
        actor="registrar.a",
        now=now,
    )
    assert re.fullmatch(r"S[0-9]{9}", local_id)
    student = students.get_student(engine, local_id)
    assert (student.legal_first_name, student.legal_middle_name, student.gender) == (
        "Zoë",
        None,
        "X",
    )
    assert student.ssid is None and student.school is None and student.created_at == now
    assert student.display_name == "O'Brien, Zoë"
    from rt_server.store.export import iter_batches

    (out,) = iter_batches(engine, local_id, ["IMM"])
    assert [(m.sq, m.vc, m.src) for m in out.imm] == [(1, "03", "SIS"), (2, "21", "")]
    assert not out.imm[1].HasField("src")
    (entry,) = audit_rows(engine)
    assert (entry["action"], entry["student_local_id"], entry["detail"]) == (
        "student.add",
        local_id,
        "records: IMM=2",
    )


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"local_id": "S000001"}, Duplicate, "local id is already enrolled"),
        (
            {"local_id": "S-NEW", "ssid": "1234567890"},
            Duplicate,
            r"SSID is already enrolled \(S000001\)",
        ),
        ({"local_id": "bad id!"}, InvalidInput, "local id may hold only"),
        ({"legal_last_name": " "}, InvalidInput, "legal last name is required"),
        ({"legal_first_name": "x" * 51}, InvalidInput, "longer than 50"),
        ({"birth_date": "2010-02-30"}, InvalidInput, "birth date: not a real calendar date"),
        ({"birth_date": "2999-01-01"}, InvalidInput, r"must be between 1900-01-01 and today \("),
        ({"birth_date": "1899-12-31"}, InvalidInput, r"must be between 1900-01-01 and today \("),
        (
            {"gender": "Q"},
            InvalidInput,
            r"gender must be one letter: M \(male\), F \(female\) or X",
        ),
        ({"gender": "FF"}, InvalidInput, r"gender must be one letter: M \(male\), F"),
        ({"ssid": "12345"}, InvalidInput, "10-digit"),
        ({"school": "123"}, InvalidInput, "not a school code"),
        ({"legal_first_name": 5}, InvalidInput, "legal first name must be text"),
        ({"ssid": 1234567891}, InvalidInput, "10-digit"),
        ({"birth_date": 20100101}, InvalidInput, "birth date must be a date"),
    ],
)
def test_add_student_refusals_change_nothing(
    engine: Engine,
    student_id: str,
    snapshot: Snap,
    change: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    student = {
        "local_id": "S000002",
        "legal_first_name": "Ana",
        "legal_last_name": "Peña",
        "birth_date": "2011-01-01",
        **change,
    }
    before = snapshot()
    with pytest.raises(error, match=message):
        students.add_student(engine, student, actor="registrar.a")
    assert snapshot() == before


def test_add_student_with_a_bad_record_changes_nothing(engine: Engine, snapshot: Snap) -> None:
    good = records_pb2.RecordBatch(table=common_pb2.IMM, imm=[records_pb2.ImmRow(vc="03")] * 3)
    bad = records_pb2.RecordBatch(table=common_pb2.IMM, imm=[records_pb2.ImmRow(dt="2025-02-30")])
    before = snapshot()
    with pytest.raises(InvalidInput, match="IMM row 3, column DT"):  # counted across batches
        students.add_student(
            engine,
            {"legal_first_name": "A", "legal_last_name": "B", "birth_date": "2011-01-01"},
            [good, bad],
            actor="r",
        )
    assert snapshot() == before


def test_list_students(engine: Engine, student_id: str) -> None:
    other = students.add_student(
        engine,
        {
            "local_id": "S000002",
            "legal_first_name": "Nuno",
            "legal_last_name": "Silva",
            "birth_date": "2011-01-01",
        },
        actor="r",
    )
    assert [s.local_id for s in students.list_students(engine)] == [student_id, other]
    assert [s.local_id for s in students.list_students(engine, "NÚÑE")] == [student_id]
    assert [s.local_id for s in students.list_students(engine, "nu")] == [student_id, other]
    assert [s.local_id for s in students.list_students(engine, "1234567890")] == [student_id]
    assert [s.local_id for s in students.list_students(engine, "S000002")] == [other]
    assert [s.local_id for s in students.list_students(engine, "%")] == []
    assert len(students.list_students(engine, "", limit=1)) == 1
    with pytest.raises(NotFound):
        students.get_student(engine, "S404")
