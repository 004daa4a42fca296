"""Hand imported rows back as Ed-Fi Data Standard 5.2 XML interchanges (``--format ed-fi-xml``).

Five documents, each validated against the official XSDs shipped in
``schemas/ed-fi-5.2`` before any file appears (README.md there maps every
Aeries column to its Ed-Fi element):

- ``Student.xml`` (InterchangeStudent): Student, by our local id;
- ``StudentTranscript.xml``: a StudentAcademicRecord per school, year and term
  of HIS, and a CourseTranscript per HIS row;
- ``StudentAssessment.xml``: a StudentAssessment per test administration (TST
  parts and CST standards as its StudentObjectiveAssessments), per CTS, LAC
  and PFT sitting;
- ``StudentEnrollment.xml``: a StudentEducationOrganizationAssociation per
  student (SSID, sex, LAC languages) and a StudentSchoolAssociation per ENR row;
- ``StudentHealth.xml``: a StudentHealth per student with IMM rows.

Documents are written a student at a time and validated while parsed back,
so memory stays flat however many students go out.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from lxml import etree
from lxml.builder import ElementMaker

from rt_client.errors import InvalidInput
from rt_server.sis import edfi_map as m
from rt_server.sis.files import Staging
from rt_server.store.sis_export import ImportedStudent

__all__ = ["INTERCHANGES", "SCHEMA_DIR", "export_edfi_xml", "validate"]

NS: Final = "http://ed-fi.org/5.2.0"
SCHEMA_DIR: Final = Path(__file__).parent / "schemas" / "ed-fi-5.2"
E: Final = ElementMaker(namespace=NS, nsmap={None: NS})
Element = Any  # lxml's _Element (lxml ships no type hints)

# file stem -> root element; the XSD is Interchange-<stem>.xsd.
INTERCHANGES: Final = {
    "Student": "InterchangeStudent",
    "StudentTranscript": "InterchangeStudentTranscript",
    "StudentAssessment": "InterchangeStudentAssessment",
    "StudentEnrollment": "InterchangeStudentEnrollment",
    "StudentHealth": "InterchangeStudentHealth",
}


@functools.cache
def _schema(stem: str) -> Any:
    return etree.XMLSchema(etree.parse(str(SCHEMA_DIR / f"Interchange-{stem}.xsd")))


def validate(path: Path, stem: str) -> None:
    """Validate ``path`` against its interchange's XSD, streaming. Raises ``InvalidInput``."""
    try:
        for _, element in etree.iterparse(str(path), schema=_schema(stem), events=("end",)):
            if element.getparent() is not None and element.getparent().getparent() is None:
                element.clear()
    except etree.XMLSyntaxError as exc:
        raise InvalidInput(
            f"{path.name} does not validate against Ed-Fi 5.2 (line {exc.lineno}): {exc.msg} "
            "Nothing was written; please report this with the line."
        ) from None


# --- values -------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _opt(tag: str, value: Any) -> list[Element]:
    return [] if value is None or value == "" else [E(tag, _text(value))]


def edorg_id(code: str | None, what: str) -> str:
    """An EducationOrganizationId (xs:long) from a CDS code / school number."""
    if code is None or not code.isdigit() or len(code) > 18:
        raise InvalidInput(
            f"{what} {code!r} is not a number, and Ed-Fi identifies schools by number "
            "(EducationOrganizationId): give the school its CDS code"
        )
    return str(int(code))


def _student_ref(s: ImportedStudent) -> Element:
    return E.StudentReference(E.StudentIdentity(E.StudentUniqueId(s.local_id)))


def _edorg_ref(code: str | None, what: str) -> Element:
    return E.EducationOrganizationReference(
        E.EducationOrganizationIdentity(E.EducationOrganizationId(edorg_id(code, what)))
    )


def _datetime(day: dt.date | None) -> list[Element]:
    return [] if day is None else [E.AdministrationDate(f"{day.isoformat()}T00:00:00")]


def _score(value: Any, method: str) -> Element:
    kind = "Decimal" if isinstance(value, decimal.Decimal) else "Integer"
    return E.ScoreResult(
        E.Result(_text(value)),
        E.ResultDatatypeType(m.uri("ResultDatatypeTypeDescriptor", kind)),
        E.AssessmentReportingMethod(m.uri("AssessmentReportingMethodDescriptor", method)),
    )


def _level(value: Any, local: str, method: str = "Scale score") -> list[Element]:
    if value is None or value == "":
        return []
    return [
        E.PerformanceLevel(
            E.PerformanceLevel(m.uri("PerformanceLevelDescriptor", _text(value), local)),
            E.AssessmentReportingMethod(m.uri("AssessmentReportingMethodDescriptor", method)),
        )
    ]


def _assessment_ref(identifier: str, local: str) -> Element:
    return E.AssessmentReference(
        E.AssessmentIdentity(E.AssessmentIdentifier(identifier), E.Namespace(local))
    )


def _objective(code: str, assessment: str, local: str, *body: Element) -> Element:
    return E.StudentObjectiveAssessment(
        *body,
        E.ObjectiveAssessmentReference(
            E.ObjectiveAssessmentIdentity(
                E.IdentificationCode(code), _assessment_ref(assessment, local)
            )
        ),
    )


# --- one student's elements, per interchange ------------------------------------------


def student_elements(s: ImportedStudent, local: str) -> Iterator[Element]:
    name = [E.FirstName(s.first_name), *_opt("MiddleName", s.middle_name)]
    yield E.Student(
        E.StudentUniqueId(s.local_id),
        E.Name(*name, E.LastSurname(s.last_name)),
        E.BirthData(E.BirthDate(s.birth_date.isoformat())),
    )


def transcript_elements(s: ImportedStudent, local: str) -> Iterator[Element]:
    sessions: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in s.rows.get("HIS", ()):
        sessions.setdefault((row["ST"] or "", row["YR"] or "", row["TE"] or ""), []).append(row)
    for (school, year, term), rows in sessions.items():
        where = f"HIS school (ST) of {year} term {term}"
        identity = [_student_ref(s), _edorg_ref(school, where), E.SchoolYear(year)]
        term_uri = m.term(term, local)
        earned = sum((r["CC"] for r in rows if r["CC"] is not None), decimal.Decimal(0))
        attempted = sum((r["CR"] for r in rows if r["CR"] is not None), decimal.Decimal(0))
        yield E.StudentAcademicRecord(
            E.SessionEarnedCredits(E.Credits(_text(earned))),
            E.SessionAttemptedCredits(E.Credits(_text(attempted))),
            *identity,
            E.Term(term_uri),
        )
        for course in rows:
            yield _course_transcript(course, s, school, where, year, term_uri, local)


def _attempt_result(row: Mapping[str, Any]) -> str:
    mark = (row["MK"] or "").strip().upper()
    if mark in ("F", "NP", "NC"):
        value = "Fail"
    elif mark in ("I", "INC"):
        value = "Incomplete"
    elif mark == "W":
        value = "Withdrawn"
    elif row["CC"] is not None and row["CR"] and not row["CC"]:
        value = "Fail"
    else:
        value = "Pass"
    return m.uri("CourseAttemptResultDescriptor", value)


def _course_transcript(
    row: Mapping[str, Any],
    s: ImportedStudent,
    school: str,
    where: str,
    year: str,
    term_uri: str,
    local: str,
) -> Element:
    body = [E.CourseAttemptResult(_attempt_result(row))]
    if row["CR"] is not None:
        body.append(E.AttemptedCredits(E.Credits(_text(row["CR"]))))
    if row["CC"] is not None:
        body.append(E.EarnedCredits(E.Credits(_text(row["CC"]))))
    if row["GR"] is not None:
        body.append(E.WhenTakenGradeLevel(m.grade_level(row["GR"])))
    body += _opt("FinalLetterGradeEarned", row["MK"])
    if row["RT"]:
        body.append(E.CourseRepeatCode(m.uri("CourseRepeatCodeDescriptor", row["RT"], local)))
    body.append(
        E.CourseReference(E.CourseIdentity(E.CourseCode(row["CN"]), _edorg_ref(school, where)))
    )
    body.append(
        E.StudentAcademicRecordReference(
            E.StudentAcademicRecordIdentity(
                _student_ref(s), _edorg_ref(school, where), E.SchoolYear(year), E.Term(term_uri)
            )
        )
    )
    body += _opt("CourseTitle", row["CO"])
    return E.CourseTranscript(*body)


def _student_assessment(
    s: ImportedStudent,
    key: str,
    identifier: str,
    local: str,
    *,
    day: dt.date | None,
    scores: list[Element],
    grade: int | None,
    levels: list[Element],
    objectives: list[Element],
    year: str | None,
) -> Element:
    body = [E.StudentAssessmentIdentifier(f"{s.local_id}/{key}"[:60]), *_datetime(day), *scores]
    if grade is not None:
        body.append(E.WhenAssessedGradeLevel(m.grade_level(grade)))
    body += [*levels, _student_ref(s), _assessment_ref(identifier, local), *objectives]
    if year is not None:
        body.append(E.SchoolYear(year))
    return E.StudentAssessment(*body)


def assessment_elements(s: ImportedStudent, local: str) -> Iterator[Element]:
    # TST and CST rows of one test administration are one StudentAssessment.
    sittings: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = {}
    for code in ("TST", "CST"):
        for row in s.rows.get(code, ()):
            sittings.setdefault((row["ID"], row["TA"]), {}).setdefault(code, []).append(row)
    for (test, admin), parts in sittings.items():
        overall = next((r for r in parts.get("TST", ()) if r["PT"] == 0), None)
        scores, levels, objectives = [], [], []
        days = [r["TD"] for rows in parts.values() for r in rows if r["TD"] is not None]
        if overall is not None:
            if overall["SS"] is not None:
                scores.append(_score(overall["SS"], "Scale score"))
            if overall["PC"] is not None:
                scores.append(_score(overall["PC"], "Percentile"))
            levels = _level(overall["PL"], local)
        for part in parts.get("TST", ()):
            if part is overall:
                continue
            body = [_score(part["SS"], "Scale score")] if part["SS"] is not None else []
            if part["PC"] is not None:
                body.append(_score(part["PC"], "Percentile"))
            objectives.append(
                _objective(
                    f"{test} part {part['PT']}", test, local, *body, *_level(part["PL"], local)
                )
            )
        for standard in parts.get("CST", ()):
            body = [_score(standard["SC"], "Raw score")] if standard["SC"] is not None else []
            objectives.append(
                _objective(
                    standard["SD"],
                    test,
                    local,
                    *body,
                    *_level(standard["PL"], local, "Raw score"),
                )
            )
        grade = overall["GR"] if overall is not None else None
        yield _student_assessment(
            s, f"{test}/{admin}", test, local, day=min(days) if days else None,
            scores=scores, grade=None if grade is None else grade // 10, levels=levels,
            objectives=objectives, year=m.school_year_of_admin(admin),
        )  # fmt: skip
    for row in s.rows.get("CTS", ()):
        subtests = []
        for n in range(1, 14):
            if row[f"ST{n}"] and row[f"SC{n}"] is not None:
                subtests.append(
                    _objective(
                        row[f"ST{n}"], row["NM"], local, _score(row[f"SC{n}"], "Scale score")
                    )
                )
        yield _student_assessment(
            s, f"{row['NM']}/{row['DT']}", row["NM"], local, day=row["DT"],
            scores=[] if row["TTL"] is None else [_score(row["TTL"], "Composite Score")],
            grade=None, levels=[], objectives=subtests, year=None,
        )  # fmt: skip
    for row in s.rows.get("LAC", ()):
        yield _student_assessment(
            s, f"{row['AC']}/{row['AD']}", row["AC"], local, day=row["AD"], scores=[],
            grade=None, levels=_level(row["LV"], local, "Proficiency level"), objectives=[],
            year=None,
        )  # fmt: skip
    fitness: dict[dt.date, list[Mapping[str, Any]]] = {}
    for row in s.rows.get("PFT", ()):
        fitness.setdefault(row["TD"], []).append(row)
    for day, rows in fitness.items():
        components = [
            _objective(
                r["CP"],
                "PFT",
                local,
                *([] if r["SC"] is None else [_score(r["SC"], "Raw score")]),
                *(
                    []
                    if r["HF"] is None
                    else _level(
                        "Healthy Fitness Zone" if r["HF"] else "Needs Improvement",
                        local,
                        "Raw score",
                    )
                ),
            )  # fmt: skip
            for r in rows
        ]
        grades = [r["GR"] for r in rows if r["GR"] is not None]
        yield _student_assessment(
            s, f"PFT/{day}", "PFT", local, day=day, scores=[],
            grade=grades[0] if grades else None, levels=[], objectives=components, year=None,
        )  # fmt: skip


def enrollment_elements(s: ImportedStudent, local: str) -> Iterator[Element]:
    body = [_student_ref(s), _edorg_ref(s.school, f"the school of student {s.local_id}")]
    if s.ssid:
        body.append(
            E.StudentIdentificationCode(
                E.IdentificationCode(s.ssid),
                E.StudentIdentificationSystem(
                    m.uri("StudentIdentificationSystemDescriptor", "State")
                ),
                E.AssigningOrganizationIdentificationCode("CALPADS"),
            )
        )
    sex = m.sex(s.gender)
    if sex is not None:
        body.append(E.Sex(sex))
    languages: dict[str, list[str]] = {}
    for row in s.rows.get("LAC", ())[-1:]:  # the newest row states the languages now
        for column, use in (("L1", "Native language"), ("L2", "Dominant language"),
                            ("L3", "Home language")):  # fmt: skip
            if row[column]:
                languages.setdefault(row[column], []).append(use)
    for code, uses in languages.items():
        body.append(
            E.Language(
                E.Language(m.language(code, local)),
                *(E.LanguageUse(m.uri("LanguageUseDescriptor", u)) for u in uses),
            )
        )
    yield E.StudentEducationOrganizationAssociation(*body)
    for row in s.rows.get("ENR", ()):
        school = [E.SchoolId(edorg_id(row["SC"], f"ENR school (SC) of {row['YR']}"))]
        enr = [_student_ref(s), E.SchoolReference(E.SchoolIdentity(*school))]
        enr += _opt("SchoolYear", row["YR"])
        enr += [E.EntryDate(row["ED"].isoformat()), E.EntryGradeLevel(m.grade_level(row["GR"]))]
        enr += _opt("ExitWithdrawDate", row["LD"])
        if row["ER"]:
            enr.append(E.ExitWithdrawType(m.uri("ExitWithdrawTypeDescriptor", row["ER"], local)))
        yield E.StudentSchoolAssociation(*enr)


def health_elements(s: ImportedStudent, local: str) -> Iterator[Element]:
    rows = s.rows.get("IMM", ())
    if not rows:
        return
    required: dict[str, list[Mapping[str, Any]]] = {}
    additional: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        kind = m.immunization_type(row["VC"])
        (required if kind else additional).setdefault(kind or row["VC"], []).append(row)

    def dates(doses: list[Mapping[str, Any]]) -> list[Element]:
        ordered = sorted(doses, key=lambda r: (r["DN"] is None, r["DN"] or 0, r["DT"]))
        return [E.ImmunizationDate(r["DT"].isoformat()) for r in ordered if r["DT"] is not None]

    yield E.StudentHealth(
        _student_ref(s),
        _edorg_ref(s.school, f"the school of student {s.local_id}"),
        E.AsOfDate(max(r["DT"] for r in rows if r["DT"] is not None).isoformat()),
        *(E.RequiredImmunization(E.ImmunizationType(k), *dates(v)) for k, v in required.items()),
        *(
            E.AdditionalImmunization(E.ImmunizationName(m.vaccine_name(k)), *dates(v))
            for k, v in additional.items()
        ),
    )


_BUILDERS: Final[dict[str, Callable[[ImportedStudent, str], Iterator[Element]]]] = {
    "Student": student_elements,
    "StudentTranscript": transcript_elements,
    "StudentAssessment": assessment_elements,
    "StudentEnrollment": enrollment_elements,
    "StudentHealth": health_elements,
}


def export_edfi_xml(
    students: Iterable[ImportedStudent], out_dir: Path, namespace: str
) -> Mapping[str, int]:
    """Write the five interchanges into ``out_dir``, each validated; elements written a file.

    ``namespace`` (``uri://district.example.org``) is where descriptor values
    and assessments Ed-Fi has no default for are published. All or nothing:
    raises ``InvalidInput`` (naming the file and line) if a document does not
    validate, and no file appears.
    """
    names = [f"{stem}.xml" for stem in INTERCHANGES]
    counts = dict.fromkeys(INTERCHANGES, 0)
    with Staging(out_dir, names) as staging:
        files = {stem: staging.open_binary(f"{stem}.xml") for stem in INTERCHANGES}
        writers = {stem: etree.xmlfile(f, encoding="UTF-8") for stem, f in files.items()}
        contexts = {stem: w.__enter__() for stem, w in writers.items()}
        roots = {}
        for stem, xf in contexts.items():
            xf.write_declaration()
            roots[stem] = xf.element(f"{{{NS}}}{INTERCHANGES[stem]}", nsmap={None: NS})
            roots[stem].__enter__()
        for student in students:
            for stem, build in _BUILDERS.items():
                for element in build(student, namespace):
                    contexts[stem].write(element)
                    counts[stem] += 1
        for stem in INTERCHANGES:
            roots[stem].__exit__(None, None, None)
            writers[stem].__exit__(None, None, None)
            files[stem].close()
        for stem in INTERCHANGES:
            if counts[stem] == 0:  # an interchange must hold one element: none, no file
                staging.names.remove(f"{stem}.xml")
            else:
                validate(staging.path(f"{stem}.xml"), stem)
    return {stem: n for stem, n in counts.items() if n}
