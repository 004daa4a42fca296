"""Realistic, made-up students and records for the demo, the tests and the benchmark.

Everything is drawn from a ``random.Random`` the caller seeds, so the same seed
gives the same students and rows. Values look like a California district's:
CDS school codes, school years "2023-2024", CAASPP/ELPAC/CAST test scores,
CVX vaccine codes, Fitnessgram components, transcript courses and marks, and
names with accents and apostrophes. No real person is described.

About 300 rows per student by default (64 HIS, 120 TST, 60 CST, 10 CTS,
13 ENR, 20 IMM, 6 LAC, 7 PFT); any count can be asked for, and natural keys
stay unique within a student however many rows are generated.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any, Final

from protos.rt.v1 import records_pb2
from rt_server.core.tables import ALL_TABLES, TABLES, row_to_proto

__all__ = [
    "DEFAULT_ROWS_PER_TABLE",
    "SAMPLE_SCHOOLS",
    "sample_batches",
    "sample_records",
    "sample_student",
]

DEFAULT_ROWS_PER_TABLE: Final[Mapping[str, int]] = {
    "TST": 120,
    "CST": 60,
    "CTS": 10,
    "HIS": 64,
    "ENR": 13,
    "IMM": 20,
    "LAC": 6,
    "PFT": 7,
}

# Made-up CDS codes: 7-digit district code + 7-digit school code.
SAMPLE_SCHOOLS: Final[tuple[str, ...]] = (
    "19647331932334",
    "19647336016505",
    "19647330121889",
    "01611920130229",
    "01611926090211",
    "37683383731395",
    "43694274334488",
)

_FIRST_NAMES: Final = (
    "José", "María", "Sofía", "Mateo", "Zoë", "Chloé", "Liam", "Olivia", "Noah",
    "Ximena", "Xóchitl", "Siobhán", "Björn", "Mei", "Hiroshi", "Aaliyah", "DeShawn",
    "Jae-won", "Thảo", "Minh", "Amara", "Ethan", "Isabella", "Santiago", "Léa",
    "Nikolai", "Fatima", "Kai", "Ananya", "Emily",
)  # fmt: skip
_MIDDLE_NAMES: Final = ("", "", "Ann", "Luis", "Grace", "José", "Marie", "Elena", "Lee", "Renée")
_LAST_NAMES: Final = (
    "Nuñez", "O'Brien", "García", "Hernández", "Nguyễn", "Smith", "Kim", "Müller",
    "Johnson", "López-Ramírez", "Đặng", "Patel", "Washington", "Østergaard",
    "D'Angelo", "Martínez", "Tran", "Wong", "Gonzalez", "Rodríguez", "Chen", "Singh",
    "Jackson", "Peña", "Ibáñez", "Begay", "Yazzie", "Okafor", "St. John", "Van der Berg",
)  # fmt: skip

# (course number, title, credits per term) by high-school grade.
_COURSES: Final[dict[int, tuple[tuple[str, str, str], ...]]] = {
    9: (
        ("1101", "English 9", "5.00"), ("1102", "English 9 Honors", "5.00"),
        ("2301", "Integrated Math I", "5.00"), ("2302", "Algebra 1", "5.00"),
        ("3101", "Biology", "5.00"), ("4101", "World Geography", "5.00"),
        ("5101", "Spanish 1", "5.00"), ("6101", "Physical Education 9", "5.00"),
        ("7101", "Intro to Art", "5.00"), ("8101", "Health", "2.50"),
        ("8102", "Computer Science Principles", "5.00"), ("7102", "Concert Band", "5.00"),
    ),
    10: (
        ("1201", "English 10", "5.00"), ("1202", "English 10 Honors", "5.00"),
        ("2311", "Integrated Math II", "5.00"), ("2312", "Geometry", "5.00"),
        ("3201", "Chemistry", "5.00"), ("4201", "World History", "5.00"),
        ("5201", "Spanish 2", "5.00"), ("6201", "Physical Education 10", "5.00"),
        ("7201", "Ceramics", "5.00"), ("8201", "Driver Education", "2.50"),
        ("4202", "AP European History", "5.00"), ("7202", "Drama", "5.00"),
    ),
    11: (
        ("1301", "American Literature", "5.00"), ("1302", "AP English Language", "5.00"),
        ("2321", "Integrated Math III", "5.00"), ("2322", "Algebra 2", "5.00"),
        ("3301", "Physics", "5.00"), ("4301", "U.S. History", "5.00"),
        ("4302", "AP U.S. History", "5.00"), ("5301", "Spanish 3", "5.00"),
        ("7301", "Digital Photography", "5.00"), ("3302", "AP Biology", "5.00"),
        ("8301", "Yearbook", "5.00"), ("7302", "Choir", "5.00"),
    ),
    12: (
        ("1401", "English 12", "5.00"), ("1402", "AP English Literature", "5.00"),
        ("2331", "Pre-Calculus", "5.00"), ("2332", "AP Calculus AB", "5.00"),
        ("2333", "AP Statistics", "5.00"), ("4401", "American Government", "5.00"),
        ("4402", "Economics", "5.00"), ("3401", "Environmental Science", "5.00"),
        ("5401", "Spanish 4 Honors", "5.00"), ("7401", "Studio Art", "5.00"),
        ("8401", "Work Experience", "2.50"), ("3402", "AP Chemistry", "5.00"),
    ),
}  # fmt: skip
_MARKS: Final = ("A", "A", "A-", "B+", "B", "B", "B-", "C+", "C", "C-", "D", "F", "P")

# (test id, parts): part 0 is the overall score, the others claims/domains.
_TESTS: Final = (
    ("CAASPP-ELA", (0, 1, 2, 3, 4)),
    ("CAASPP-MATH", (0, 1, 2, 3)),
    ("CAST", (0, 1, 2, 3)),
    ("ELPAC-SUM", (0, 1, 2)),
    ("IREADY-RD", (0,)),
    ("IREADY-MA", (0,)),
)
_STANDARDS: Final = (
    ("CAASPP-ELA", ("ELA.RL.1", "ELA.RI.2", "ELA.W.3", "ELA.SL.4", "ELA.L.5")),
    ("CAASPP-MATH", ("MATH.CSP", "MATH.PSMA", "MATH.CR", "MATH.NS", "MATH.EE")),
)
_CTS_TESTS: Final[tuple[tuple[str, tuple[tuple[str, int, int], ...], int, int], ...]] = (
    # name, subtests (name, low, high), total low, total high
    ("SAT", (("EBRW", 200, 800), ("MATH", 200, 800)), 400, 1600),
    ("PSAT/NMSQT", (("EBRW", 160, 760), ("MATH", 160, 760)), 320, 1520),
    ("ACT", (("ENGLISH", 1, 36), ("MATH", 1, 36), ("READING", 1, 36), ("SCIENCE", 1, 36)), 1, 36),
    ("AP CALC AB", (), 1, 5),
    ("AP US HIST", (), 1, 5),
    ("AP ENG LANG", (), 1, 5),
    ("AP BIOLOGY", (), 1, 5),
    ("AP SPANISH", (), 1, 5),
)
# (CVX code, age in months at each dose) — the California school-entry series.
_VACCINES: Final = (
    ("08", (0, 2, 6)),  # hepatitis B
    ("20", (2, 4, 6, 15, 48)),  # DTaP
    ("10", (2, 4, 6, 48)),  # IPV (polio)
    ("49", (2, 4, 12)),  # Hib
    ("03", (12, 48)),  # MMR
    ("21", (12, 48)),  # varicella
    ("83", (12, 18)),  # hepatitis A
    ("115", (132,)),  # Tdap
    ("114", (132,)),  # MenACWY
    ("165", (132, 138)),  # HPV
)
_FITNESS: Final = (
    ("AEROBIC CAPACITY", Decimal("25.00"), Decimal("55.00")),  # VO2max
    ("BODY COMPOSITION", Decimal("14.00"), Decimal("32.00")),  # BMI
    ("ABDOMINAL STRENGTH", Decimal("5.00"), Decimal("75.00")),  # curl-ups
    ("TRUNK EXTENSION", Decimal("6.00"), Decimal("12.00")),  # inches
    ("UPPER BODY STRENGTH", Decimal("2.00"), Decimal("40.00")),  # push-ups
    ("FLEXIBILITY", Decimal("6.00"), Decimal("12.00")),  # sit-and-reach, inches
)
_LANGUAGES: Final = ("00", "01", "02", "03", "07", "08", "12")  # CALPADS: English, Spanish, ...

_CENT: Final = Decimal("0.01")
# The school year a sample student is in grade 12; earlier rows go back from it.
_LAST_YEAR: Final = 2024


def sample_student(rng: random.Random, i: int) -> dict[str, Any]:
    """Demographics of sample student number ``i``, as ``store.add_student`` takes them.

    ``local_id`` is ``S`` + ``i`` in six digits and the SSID is derived from
    ``i`` alone, so both are unique across any number of students.
    """
    # Multiplying by a prime that shares no factor with 9e9 is a bijection.
    ssid = str(1_000_000_000 + (i * 2_654_435_761) % 9_000_000_000)
    birth = dt.date(2006, 9, 1) + dt.timedelta(days=rng.randrange(365 * 12))
    return {
        "local_id": f"S{i:06d}",
        "ssid": ssid,
        "legal_first_name": rng.choice(_FIRST_NAMES),
        "legal_middle_name": rng.choice(_MIDDLE_NAMES),
        "legal_last_name": rng.choice(_LAST_NAMES),
        "birth_date": birth,
        "gender": rng.choice(("F", "M", "F", "M", "X")),
        "school": rng.choice(SAMPLE_SCHOOLS),
    }


def _years() -> Iterator[int]:
    """School years (by their fall calendar year), newest first, without end."""
    year = _LAST_YEAR
    while True:
        yield year
        year -= 1


def _school_year(year: int) -> str:
    return f"{year}-{year + 1}"


def _day(rng: random.Random, year: int, month: int) -> dt.date:
    return dt.date(year, month, rng.randint(1, 28))


def _his(rng: random.Random) -> Iterator[dict[str, Any]]:
    school = rng.choice(SAMPLE_SCHOOLS)
    for k, year in enumerate(_years()):
        grade = 12 - k % 4
        catalog = _COURSES[grade]
        for term in ("S", "F"):  # spring before fall: newest first
            for cn, title, credits in rng.sample(catalog, 8):
                mark = rng.choice(_MARKS)
                attempted = Decimal(credits)
                yield {
                    "YR": _school_year(year), "GR": grade, "TE": term, "CN": cn, "CO": title,
                    "MK": mark, "CR": attempted,
                    "CC": Decimal("0.00") if mark == "F" else attempted,
                    "ST": school, "CI": rng.choice(("E", "G", "G", "S")),
                    "RT": None, "DC": _day(rng, year + 1, 6),
                    "CH": "H" if "Honors" in title or title.startswith("AP ") else "",
                    "PF": "P" if mark == "P" else None,
                }  # fmt: skip


def _tst(rng: random.Random) -> Iterator[dict[str, Any]]:
    for k, year in enumerate(_years()):
        grade = max(3, 11 - k)
        admin = f"{year}-{(year + 1) % 100:02d} SPR"
        tested = _day(rng, year + 1, rng.choice((4, 5)))
        for test_id, parts in _TESTS:
            overall_level = rng.randint(1, 4)
            for part in parts:
                yield {
                    "ID": test_id, "PT": part, "TA": admin, "TD": tested, "GR": grade * 10,
                    "TY": "DIAG" if test_id.startswith("IREADY") else "SUMM",
                    "SS": rng.randint(2100, 2800) if part == 0 else None,
                    "PL": str(overall_level if part == 0 else rng.randint(1, 3)),
                    "PC": rng.randint(1, 99) if test_id.startswith("IREADY") else None,
                }  # fmt: skip


def _cst(rng: random.Random) -> Iterator[dict[str, Any]]:
    for year in _years():
        admin = f"{year}-{(year + 1) % 100:02d} SPR"
        tested = _day(rng, year + 1, 5)
        for test_id, standards in _STANDARDS:
            for standard in standards:
                score = (Decimal(rng.randint(0, 10000)) / 100).quantize(_CENT)
                yield {
                    "ID": test_id, "SD": standard, "TA": admin, "TD": tested, "SC": score,
                    "PL": "ABOVE" if score >= 75 else "NEAR" if score >= 45 else "BELOW",
                }  # fmt: skip


def _cts(rng: random.Random) -> Iterator[dict[str, Any]]:
    for year in _years():
        for name, subtests, low, high in _CTS_TESTS:
            row: dict[str, Any] = {"NM": name, "DT": _day(rng, year + 1, rng.choice((3, 5, 10)))}
            total = 0
            for s, (sub, sub_low, sub_high) in enumerate(subtests, start=1):
                score = rng.randint(sub_low, sub_high)
                row[f"ST{s}"], row[f"SC{s}"] = sub, score
                total += score
            if name == "ACT":
                total //= len(subtests)  # the composite is the mean
            row["TTL"] = total if subtests else rng.randint(low, high)
            yield row


def _enr(rng: random.Random) -> Iterator[dict[str, Any]]:
    school = rng.choice(SAMPLE_SCHOOLS)
    for k, year in enumerate(_years()):
        grade = 12 - k
        if grade in (8, 5):  # moved up to middle / high school
            school = rng.choice(SAMPLE_SCHOOLS)
        yield {
            "SC": school, "YR": _school_year(year), "GR": max(grade, -1),
            "ED": _day(rng, year, 8), "LD": _day(rng, year + 1, 6),
            "ER": "T160" if k == 0 else None,
        }  # fmt: skip


def _imm(rng: random.Random, birth: dt.date) -> Iterator[dict[str, Any]]:
    for code, months in _VACCINES:
        for dose, age in enumerate(months, start=1):
            given = birth + dt.timedelta(days=age * 30 + rng.randint(0, 20))
            yield {"VC": code, "DN": dose, "DT": given}
    for dose, year in enumerate(_years(), start=1):  # then a flu shot every fall
        yield {"VC": "150", "DN": dose, "DT": _day(rng, year, 10)}


def _lac(rng: random.Random) -> Iterator[dict[str, Any]]:
    first = rng.choice(_LANGUAGES)
    home = first if rng.random() < 0.8 else "00"
    for k, year in enumerate(_years()):
        yield {
            "L1": first, "L2": first, "L3": home,
            "AC": "ELPAC-SUM" if k else "ELPAC-INIT", "AD": _day(rng, year + 1, 3),
            "LV": str(rng.randint(1, 4)),
        }  # fmt: skip


def _pft(rng: random.Random) -> Iterator[dict[str, Any]]:
    grade = 9
    for year in _years():
        tested = _day(rng, year + 1, 3)
        for component, low, high in _FITNESS:
            score = (low + (high - low) * Decimal(rng.random())).quantize(_CENT)
            yield {
                "TD": tested, "CP": component, "SC": score,
                "HF": rng.random() < 0.7, "GR": grade,
            }  # fmt: skip
        grade = max(grade - 2, 5)


def sample_records(
    rng: random.Random,
    rows_per_table: Mapping[str, int] | None = None,
    *,
    birth_date: dt.date | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Row dicts per table code (``rt_server.core.tables`` form), SQ = 1, 2, ...

    ``rows_per_table`` defaults to ``DEFAULT_ROWS_PER_TABLE``; tables it leaves
    out get no rows. ``birth_date`` dates the immunizations (default: random).
    """
    counts = DEFAULT_ROWS_PER_TABLE if rows_per_table is None else rows_per_table
    birth = birth_date or dt.date(2008, 1, 1) + dt.timedelta(days=rng.randrange(365 * 8))
    generators: dict[str, Callable[[random.Random], Iterator[dict[str, Any]]]] = {
        "TST": _tst, "CST": _cst, "CTS": _cts, "HIS": _his,
        "ENR": _enr, "IMM": lambda r: _imm(r, birth), "LAC": _lac, "PFT": _pft,
    }  # fmt: skip
    records: dict[str, list[dict[str, Any]]] = {}
    for code in ALL_TABLES:
        n = counts.get(code, 0)
        if n <= 0:
            continue
        names = TABLES[code].column_names
        rows = []
        for sq, values in enumerate(generators[code](rng), start=1):
            row = dict.fromkeys(names)
            row.update(values)
            row["SQ"] = sq
            rows.append(row)
            if sq == n:
                break
        records[code] = rows
    return records


def sample_batches(
    rng: random.Random,
    rows_per_table: Mapping[str, int] | None = None,
    *,
    batch_rows: int = 1000,
    birth_date: dt.date | None = None,
) -> list[records_pb2.RecordBatch]:
    """``sample_records`` as ``RecordBatch`` messages of at most ``batch_rows`` rows each."""
    batches: list[records_pb2.RecordBatch] = []
    for code, rows in sample_records(rng, rows_per_table, birth_date=birth_date).items():
        spec = TABLES[code]
        for start in range(0, len(rows), batch_rows):
            batch = records_pb2.RecordBatch(table=spec.enum)
            getattr(batch, spec.batch_field).extend(
                row_to_proto(spec, row) for row in rows[start : start + batch_rows]
            )
            batches.append(batch)
    return batches
