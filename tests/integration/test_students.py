"""Our students, as a registrar keeps them (issue 13 items 1, 2 and 4), through the
``Registrar`` service and the ``rt`` CLI, on real district servers.

- ``rt student add`` takes only a school of OUR district (one of our directory
  entry's), warns on a likely duplicate (same name and birth date) and refuses
  a second student with one SSID; nothing is written by a refusal.
- ``rt student show|edit|records``: one student with the rows we hold and the
  row versions an import replaced; demographics corrected (audited, no values
  in the audit); records added to a student who exists, validated as at enrolment.
- ``rt review`` says before the import that accepting a conflict replaces our
  row; ``rt import --accept-conflicts`` does, ``--keep-both`` adds beside it;
  ``rt disclosures`` shows the rows actually sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from protos.rt.v1 import common_pb2, registrar_pb2
from rt_client import cli as rt_cli
from rt_server.store.schema import AUDIT_LOG, STUDENTS
from tests.harness.flow import (
    RPC_TIMEOUT,
    Code,
    add_student,
    approve,
    assert_unchanged,
    create_request,
    refused,
    rows_of,
    small_records,
    snapshot,
)
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR, PRIOR_SCHOOL, Pair, Side


def student(
    side: Side, local_id: str = "", school: str = "", **fields: str
) -> registrar_pb2.Student:
    values = {
        "local_id": local_id,
        "legal_first_name": "Ana",
        "legal_last_name": "Nuñez",
        "birth_date": "2011-04-02",
        "gender": "F",
        "school": school or side.school,
        **fields,
    }
    return registrar_pb2.Student(**values)


def add(side: Side, s: registrar_pb2.Student, **kw: Any) -> registrar_pb2.Student:
    return side.rpc.AddStudent(
        registrar_pb2.AddStudentRequest(student=s, actor="bob", **kw), timeout=RPC_TIMEOUT
    )


class Rt:
    """``rt`` run in this process against one district, as a registrar types it."""

    def __init__(self, side: Side, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = side.enrolled.config.data_dir / "district.toml"
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        status = rt_cli.main([*args, "--config", str(self.config), "--as", "bob"])
        out, err = self.capsys.readouterr()
        assert "Traceback" not in out + err
        return status, out, err


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


# --- item 4: students that cannot exist ---------------------------------------------------------


def test_student_add_takes_only_a_school_of_ours(districts: Pair) -> None:
    p = districts
    before = snapshot(p.b)
    other = refused(p.b.rpc.AddStudent, registrar_pb2.AddStudentRequest(
        student=student(p.b, school=PRIOR_SCHOOL), actor="bob"), Code.INVALID_ARGUMENT)  # fmt: skip
    assert f"belongs to district {PRIOR}" in other and NEW_SCHOOL in other, other
    unknown_school = NEW + "9999999"  # our district's code, a school the registry does not list
    unknown = refused(
        p.b.rpc.AddStudent,
        registrar_pb2.AddStudentRequest(student=student(p.b, school=unknown_school), actor="bob"),
        Code.INVALID_ARGUMENT,
    )
    assert "not one of this district's registered schools" in unknown, unknown
    assert_unchanged(before, snapshot(p.b))
    # Our school: enrolled, no warning.
    reply = add(p.b, student(p.b, "B1", ssid="1234567890"))
    assert reply.local_id == "B1" and not reply.warnings


def test_a_likely_duplicate_is_warned_and_a_second_ssid_refused(districts: Pair) -> None:
    p = districts
    assert not add(p.b, student(p.b, "B1", ssid="1234567890")).warnings
    # The same name (any case, any accents) and birth date: enrolled, with a warning.
    twin = add(p.b, student(p.b, "B2", legal_first_name="ANA", legal_last_name="Nunez"))
    assert twin.local_id == "B2"
    assert len(twin.warnings) == 1 and "same name and birth date (B1)" in twin.warnings[0]
    # The same SSID: refused, nothing written.
    before = snapshot(p.b)
    details = refused(p.b.rpc.AddStudent, registrar_pb2.AddStudentRequest(
        student=student(p.b, "B3", ssid="1234567890", legal_first_name="Other"), actor="bob"),
        Code.ALREADY_EXISTS)  # fmt: skip
    assert "SSID is already enrolled (B1)" in details
    assert_unchanged(before, snapshot(p.b))
    # Someone else entirely: no warning.
    assert not add(
        p.b, student(p.b, "B4", legal_first_name="Zoë", birth_date="2012-01-01")
    ).warnings


def test_student_show_edit_and_records(districts: Pair) -> None:
    p = districts
    records = small_records(3, n=2)
    add_student(p.b, "B1", {"HIS": records["HIS"]})
    shown = p.b.rpc.GetStudent(registrar_pb2.StudentRef(local_id="B1"), timeout=RPC_TIMEOUT)
    assert shown.student.local_id == "B1" and shown.student.legal_last_name == "Nuñez"
    assert [(r.table, r.rows) for r in shown.rows] == [(common_pb2.HIS, 2)]
    assert not shown.replaced
    refused(p.b.rpc.GetStudent, registrar_pb2.StudentRef(local_id="B404"), Code.NOT_FOUND)

    # Correct the demographics: the fields given change, the audit names fields only.
    edited = p.b.rpc.EditStudent(
        registrar_pb2.EditStudentRequest(
            local_id="B1",
            changes=registrar_pb2.Student(legal_last_name="Núñez Ortiz", birth_date="2011-04-03"),
            clear=["gender"],
            actor="bob",
        ),
        timeout=RPC_TIMEOUT,
    )
    assert (edited.legal_last_name, edited.birth_date, edited.gender) == (
        "Núñez Ortiz",
        "2011-04-03",
        "",
    )
    assert edited.legal_first_name == "Ana" and edited.ssid == "1234567890"
    with p.b.engine.connect() as conn:
        audit = conn.execute(
            select(AUDIT_LOG.c.actor, AUDIT_LOG.c.detail).where(
                AUDIT_LOG.c.action == "student.edit"
            )
        ).all()
        keys = conn.execute(select(STUDENTS.c.last_name_key)).scalars().all()
    assert [tuple(a) for a in audit] == [("bob", "corrected: legal_last_name, birth_date, gender")]
    assert keys == ["nunezortiz"]  # matching finds the student under the corrected name
    # Refused corrections change nothing: a school not ours, another's SSID, a bad date.
    add_student(p.b, "B2", ssid="2234567890", first="Other")
    before = snapshot(p.b)
    for changes, code in [
        (registrar_pb2.Student(school=PRIOR_SCHOOL), Code.INVALID_ARGUMENT),
        (registrar_pb2.Student(ssid="2234567890"), Code.ALREADY_EXISTS),
        (registrar_pb2.Student(birth_date="2011-02-30"), Code.INVALID_ARGUMENT),
    ]:
        refused(p.b.rpc.EditStudent, registrar_pb2.EditStudentRequest(
            local_id="B1", changes=changes, actor="bob"), code)  # fmt: skip
    unknown = registrar_pb2.EditStudentRequest(
        local_id="B404", changes=registrar_pb2.Student(gender="M"), actor="bob"
    )
    refused(p.b.rpc.EditStudent, unknown, Code.NOT_FOUND)
    assert_unchanged(before, snapshot(p.b))

    # Records for a student who exists: numbered after what we hold, validated.
    more = small_records(4, n=3)
    batch = registrar_pb2.AddStudentRecordsRequest(local_id="B1", actor="bob")
    from tests.harness.flow import batches_of

    batch.records.extend(batches_of({"HIS": more["HIS"][:1], "IMM": more["IMM"]}))
    detail = p.b.rpc.AddStudentRecords(batch, timeout=RPC_TIMEOUT)
    assert {common_pb2.TableCode.Name(r.table): r.rows for r in detail.rows} == {"HIS": 3, "IMM": 3}
    assert [r["SQ"] for r in rows_of(p.b, "HIS", "B1")] == [1, 2, 3]
    before = snapshot(p.b)
    bad = registrar_pb2.AddStudentRecordsRequest(local_id="B1", actor="bob")
    bad.records.extend(batches_of({"HIS": [{**more["HIS"][1], "CO": "x" * 500}]}))
    assert "HIS row 0" in refused(p.b.rpc.AddStudentRecords, bad, Code.INVALID_ARGUMENT)
    refused(p.b.rpc.AddStudentRecords, registrar_pb2.AddStudentRecordsRequest(
        local_id="B1", actor="bob"), Code.INVALID_ARGUMENT)  # fmt: skip
    assert_unchanged(before, snapshot(p.b))


def test_the_student_commands_of_rt(
    districts: Pair, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = districts
    rt = Rt(p.b, capsys)
    base = ["student", "add", "--first", "Ana", "--last", "Nuñez", "--birth-date", "2011-04-02",
            "--gender", "F"]  # fmt: skip
    status, out, err = rt(*base, "--school", PRIOR_SCHOOL, "--local-id", "B0")
    assert status == 1 and f"belongs to district {PRIOR}" in err
    status, out, err = rt(*base, "--school", NEW_SCHOOL, "--local-id", "B1", "--ssid", "1234567890")
    assert status == 0 and "Enrolled student B1" in out and "warning" not in err
    status, out, err = rt(*base, "--school", NEW_SCHOOL, "--local-id", "B2")
    assert status == 0 and "Enrolled student B2" in out
    assert "warning" in err and "same name and birth date (B1)" in err
    status, out, err = rt(*base, "--school", NEW_SCHOOL, "--ssid", "1234567890")
    assert status == 1 and "SSID is already enrolled (B1)" in err

    records = tmp_path / "records.json"
    records.write_text(
        json.dumps(
            [
                {
                    "table": "HIS",
                    "his": [
                        {"yr": "2023-2024", "te": "F", "cn": "1101", "mk": "A", "st": NEW_SCHOOL}
                    ],
                }
            ]
        ),  # fmt: skip
        encoding="utf-8",
    )
    status, out, err = rt("student", "records", "B1", "--records", str(records))
    assert status == 0 and "HIS 1" in out, err
    status, out, err = rt("student", "edit", "B1", "--last", "Ortiz", "--clear", "gender")
    assert status == 0 and "Corrected student B1" in out
    status, out, err = rt("student", "show", "B1")
    assert status == 0 and "Ana Ortiz" in out and "HIS 1" in out
    status, out, err = rt("student", "show", "B1", "--json")
    assert json.loads(out)["student"]["legal_last_name"] == "Ortiz"
    status, out, err = rt("student", "edit", "B1")
    assert status == 2 and "nothing to change" in err  # a command line rt cannot take
    status, out, err = rt("student", "show", "B404")
    assert status == 1 and "no student" in err
    records.write_text("{not json", encoding="utf-8")
    status, out, err = rt("student", "records", "B1", "--records", str(records))
    assert status == 2 and "is not JSON" in err  # a file the command names


# --- items 1 and 2 at the command line -----------------------------------------------------------


def test_review_says_accepting_replaces_ours_and_import_does(
    districts: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    p = districts
    records = small_records(5, n=2)
    add_student(p.a, "A1", {"HIS": records["HIS"], "IMM": records["IMM"][:1]})
    ours = [{**records["HIS"][0], "MK": "C", "SRC": "LOCAL"}, {**records["HIS"][1], "MK": "D"}]
    add_student(p.b, "B1", {"HIS": ours})
    request_id = create_request(p)
    approve(p, request_id)

    rt_b = Rt(p.b, capsys)
    status, out, err = rt_b("review", request_id, "--rows")
    assert status == 0, err
    said = " ".join(out.split())  # as read, whatever the terminal's width
    assert "HIS:0 CONFLICT" in said and "accepting it replaces our row SQ 1" in said, out
    assert "--accept-conflicts TABLE:INDEX' replaces our row" in said, out

    status, out, err = rt_b("import", request_id, "--accept-conflicts", "HIS:0",
                            "--keep-both", "HIS:1")  # fmt: skip
    assert status == 0, err
    his = rows_of(p.b, "HIS", "B1")
    assert [(r["SQ"], r["MK"], r["SRC"]) for r in his] == [
        (1, records["HIS"][0]["MK"], "RT"),  # ours, replaced in place
        (2, "D", None),  # ours, kept ...
        (3, records["HIS"][1]["MK"], "RT"),  # ... and the received one beside it
    ]
    status, out, err = rt_b("student", "show", "B1")
    assert "Rows replaced at import" in out and "MK='C'" in out, out

    # The prior district's record of disclosure: the rows sent, not all eight tables.
    status, out, err = Rt(p.a, capsys)("disclosures", "--student", "A1")
    assert status == 0 and "HIS 2, IMM 1" in out, out
