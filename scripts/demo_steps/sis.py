"""The demo's SIS side: an Aeries table export to start from, and the hand-back to end with.

``write_export`` writes what a prior district's Aeries would export (``STU.csv``
and one file a record table, header row = Aeries column codes, the layout
``rt sis load`` reads), from ``scripts.samples``; ``step_seed`` loads it into the
prior district. ``step_handback`` exports the new district's import as Aeries CSV
and Ed-Fi XML, and ``validate_edfi`` checks the Ed-Fi documents against the XSDs
once more, as a receiving system would.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rt_server.core.tables import ALL_TABLES, TABLES
from rt_server.sis.export_aeries import STU_COLUMNS, field
from scripts import samples
from scripts.demo_steps.commands import Demo, DemoError, console
from scripts.demo_steps.world import PRIOR_SCHOOL, DistrictRun

SCHEMAS = Path(__file__).resolve().parents[2] / "rt_server" / "sis" / "schemas" / "ed-fi-5.2"


@dataclass(frozen=True)
class SampleStudent:
    local_id: str
    ssid: str
    first: str
    middle: str
    last: str
    birth_date: str
    gender: str
    rows: int


def step_seed(demo: Demo, prior: DistrictRun, count: int, seed: int) -> list[SampleStudent]:
    """The prior district's SIS exports its tables (Aeries' layout); ``rt sis load`` loads them."""
    export = demo.work / "aeries-export"
    written = write_export(export, count, seed, PRIOR_SCHOOL)
    files = ", ".join(sorted(p.name for p in export.iterdir()))
    console.print(f"  the SIS's export in {demo.rel(export)}: {files}")
    demo.rt(prior, "sis load", demo.rel(export))
    students = [
        SampleStudent(
            s["local_id"], s["ssid"], s["legal_first_name"], s["legal_middle_name"],
            s["legal_last_name"], s["birth_date"].isoformat(), s["gender"], rows,
        )
        for s, rows in written
    ]  # fmt: skip
    demo.rt(prior, "student list")
    total = sum(s.rows for s in students)
    console.print(f"  {len(students)} students with {total} record rows in eight tables")
    return students


def step_handback(demo: Demo, new: DistrictRun, request_id: str) -> None:
    """The new district hands the imported rows back to its SIS: Aeries CSV and Ed-Fi XML."""
    out = demo.work / "handback"
    for fmt in ("aeries-csv", "ed-fi-xml"):
        demo.rt(new, "sis export", "--request", request_id, "--format", fmt, "--out",
                demo.rel(out / fmt))  # fmt: skip
    problems = validate_edfi(out / "ed-fi-xml")
    if problems:
        raise DemoError("an Ed-Fi document does not validate: " + "; ".join(problems))
    console.print(
        f"  Aeries CSV (for Aeries' Import Data): {out / 'aeries-csv'}\n"
        f"  Ed-Fi 5.2 XML (each document valid against the XSDs): {out / 'ed-fi-xml'}\n"
        "  (kept with --keep)"
    )


def _write(path: Path, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(",".join(header) + "\r\n")
        for row in rows:
            out.write(",".join(field(v) for v in row) + "\r\n")


def write_export(
    folder: Path, count: int, seed: int, school: str
) -> list[tuple[dict[str, Any], int]]:
    """Write an Aeries-layout export of ``count`` sample students into ``folder``.

    Returns each student's demographics (``samples.sample_student``) and row count.
    """
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    students: list[tuple[dict[str, Any], int]] = []
    stu: list[tuple[Any, ...]] = []
    tables: dict[str, list[tuple[Any, ...]]] = {code: [] for code in ALL_TABLES}
    for i in range(1, count + 1):
        s = samples.sample_student(rng, i)
        birth: dt.date = s["birth_date"]
        records = samples.sample_records(rng, birth_date=birth)
        stu.append(
            (
                s["local_id"], school, s["legal_last_name"], s["legal_first_name"],
                s["legal_middle_name"], birth, s["gender"], None, s["ssid"],
            )
        )  # fmt: skip
        for code, rows in records.items():
            names = ("SQ", *TABLES[code].data_columns, "SRC")
            tables[code].extend((s["local_id"], *(r[n] for n in names)) for r in rows)
        students.append((s, sum(len(rows) for rows in records.values())))
    _write(folder / "STU.csv", STU_COLUMNS, stu)
    for code, rows in tables.items():
        _write(folder / f"{code}.csv", ("PID", "SQ", *TABLES[code].data_columns, "SRC"), rows)
    return students


def validate_edfi(folder: Path) -> list[str]:
    """Each Ed-Fi document in ``folder`` checked against its interchange's XSD: the problems."""
    from lxml import etree

    problems: list[str] = []
    documents = sorted(folder.rglob("*.xml"))
    if not documents:
        return [f"no Ed-Fi document in {folder}"]
    for document in documents:
        tree = etree.parse(str(document))
        name = etree.QName(tree.getroot()).localname  # InterchangeStudent ...
        xsd = SCHEMAS / f"Interchange-{name.removeprefix('Interchange')}.xsd"
        schema = etree.XMLSchema(etree.parse(str(xsd)))
        if not schema.validate(tree):
            problems.append(f"{document.name}: {schema.error_log.last_error}")
    return problems
