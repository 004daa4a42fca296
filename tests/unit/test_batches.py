"""The batches' pure parts: what ``rt approve --all-exact`` calls exact, and the CSV file
of ``rt request create --from-csv`` (issue 14, item 4)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from protos.rt.v1 import common_pb2
from rt_client.cli.batches import read_request_csv
from rt_client.cli.session import CliError
from rt_server.core.matching import Candidate, exact_match
from rt_server.core.model import StudentIdentity, StudentRecord

OURS = StudentRecord(
    local_id="A1",
    ssid="1234567890",
    legal_first_name="María",
    legal_middle_name=None,
    legal_last_name="Nuñez-Ortega",
    birth_date=dt.date(2011, 4, 2),
    gender="F",
    school=None,
    created_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
)
BY_SSID = Candidate(OURS, 100, True, "SSID matches")


def _who(**changes: object) -> StudentIdentity:
    fields: dict[str, object] = {
        "ssid": "1234567890",
        "legal_first_name": "MARIA",
        "legal_last_name": "Nunez Ortega",
        "birth_date": dt.date(2011, 4, 2),
    }
    fields.update(changes)
    return StudentIdentity(**fields)  # type: ignore[arg-type]


def test_exact_is_ssid_birth_date_and_names_without_case_or_accents() -> None:
    assert exact_match(_who(), [BY_SSID]) is BY_SSID


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"ssid": None}, "the request gives no SSID"),
        ({"birth_date": dt.date(2011, 2, 4)}, "but the birth date differs"),
        ({"legal_first_name": "Marta"}, "but the first name differs"),
        ({"legal_last_name": "Nunez"}, "but the last name differs"),
        ({"legal_last_name": None, "birth_date": None}, "birth date and last name differ"),
    ],
)
def test_anything_less_is_for_a_person(changes: dict[str, object], why: str) -> None:
    found = exact_match(_who(**changes), [BY_SSID])
    assert isinstance(found, str) and why in found


def test_a_near_match_without_the_ssid_is_not_exact() -> None:
    near = Candidate(OURS, 99, False, "last name, birth date, first name match")
    assert exact_match(_who(), [near]) == "no student here has the request's SSID"


def _csv(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "rush.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_the_csv_file_a_request_a_line(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "\ufeffLocal_ID , prior_school,tables\r\n"
        "B1,19647331932334,\r\n"
        "\r\n"
        'B2, 19647331932334 ,"his, enr"\r\n',
    )
    items = read_request_csv(path)
    assert [i.label for i in items] == ["line 2", "line 4"]
    assert [(i.request.student_local_id, i.request.prior_school) for i in items] == [
        ("B1", "19647331932334"),
        ("B2", "19647331932334"),
    ]
    assert list(items[1].request.tables) == [common_pb2.HIS, common_pb2.ENR]
    assert not any(i.HasField("enroll") for i in items)


def test_a_line_with_demographics_enrolls_the_student(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "local_id,prior_school,ssid,first,middle,last,birth_date,gender,school\n"
        "B7,19647331932334,1234567890,Ana,,Nuñez,2011-04-02,F,37683383732997\n"
        "B8,19647331932334,,,,,,,\n",
    )
    enrolling, enrolled = read_request_csv(path)
    assert enrolling.enroll.legal_first_name == "Ana"
    assert enrolling.enroll.legal_last_name == "Nuñez"
    assert enrolling.enroll.birth_date == "2011-04-02" and enrolling.enroll.ssid == "1234567890"
    assert enrolling.enroll.school == "37683383732997"
    assert not enrolled.HasField("enroll")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b"local_id,prior_school\nB\xe9,1\n", "not UTF-8"),
        ("", "needs a header row"),
        ("local_id\nB1\n", "prior_school is missing"),
        ("local_id,prior_school,grade\nB1,1,9\n", "'grade' is not one"),
        ("local_id,prior_school,local_id\nB1,1,B2\n", "needs a header row"),
        ("local_id,prior_school\n,1\nB2,\n", "2 problem(s), nothing was sent: line 2: local_id"),
        ("local_id,prior_school\nB1,1,2\n", "line 2: 3 values, but the header names 2"),
        ("local_id,prior_school,tables\nB1,1,XYZ\n", "line 2: tables takes codes"),
        ("local_id,prior_school\n" + "x" * 101 + ",1\n", "longer than 100 characters"),
        ("local_id,prior_school\n\n\n", "lists no students"),
        ('local_id,prior_school\n"B1,1\n', "line"),  # an unclosed quote
        ("local_id,prior_school,first,last\nB1,1,Ana,\n", "last, birth_date, school cannot"),
        (
            "local_id,prior_school,first,last,birth_date,school\nB1,1,Ana,Ruiz,2011-02-30,1\n",
            "line 2: birth_date must be a real date",
        ),
    ],
)
def test_a_bad_csv_file_says_what_and_where(tmp_path: Path, text: str | bytes, says: str) -> None:
    with pytest.raises(CliError) as refused:
        read_request_csv(_csv(tmp_path, text))
    assert says in str(refused.value)


def test_a_missing_file_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="cannot read the CSV file"):
        read_request_csv(tmp_path / "missing.csv")
    with pytest.raises(CliError, match="cannot read the CSV file"):
        read_request_csv(tmp_path)
