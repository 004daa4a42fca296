"""Hand imported rows back as Aeries-layout CSV files (``rt sis export --format aeries-csv``).

One file a table, named by its Aeries code (``STU.csv``, ``HIS.csv`` ...), the
header row the Aeries column codes, ready for Aeries' "Import Data into
Aeries" utility. ``STU.csv`` has the students (ID, SC, LN, FN, MN, BD, SX, GR,
CID); each record table has PID, its data columns and SRC (``RT``), no SQ:
the SIS numbers its own rows, and its import matches rows by the table's
natural key (DESIGN.md section 6).

Values (UTF-8, RFC 4180, CRLF): a text value is always quoted, so an empty
text ``""`` differs from a missing value (an empty, unquoted field); numbers
and dates (``YYYY-MM-DD``) are bare; a yes/no column is ``Y`` or ``N``.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, TextIO

from rt_server.core.tables import ALL_TABLES, TABLES, ColumnKind
from rt_server.sis.files import Staging
from rt_server.store.sis_export import ImportedStudent

__all__ = ["STU_COLUMNS", "export_aeries_csv", "record_columns"]

STU_COLUMNS: Final = ("ID", "SC", "LN", "FN", "MN", "BD", "SX", "GR", "CID")


def record_columns(code: str) -> tuple[str, ...]:
    """The CSV header of record table ``code``: PID, the data columns, SRC."""
    return ("PID", *TABLES[code].data_columns, "SRC")


def field(value: Any) -> str:
    """One CSV field: text always quoted, None empty, the rest bare."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, str):
        return '"' + value.replace('"', '""') + '"'
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _line(out: TextIO, values: Iterable[Any]) -> None:
    out.write(",".join(field(v) for v in values) + "\r\n")


def _header(out: TextIO, names: Iterable[str]) -> None:
    out.write(",".join(names) + "\r\n")


def _grade(student: ImportedStudent) -> int | None:
    """The student's grade: the newest enrollment's (we hold no grade of our own)."""
    enrollments = [r for r in student.rows.get("ENR", ()) if r.get("GR") is not None]
    if not enrollments:
        return None
    newest = max(enrollments, key=lambda r: (r["YR"] or "", r["ED"]))
    return int(newest["GR"])


def stu_row(student: ImportedStudent) -> tuple[Any, ...]:
    return (
        student.local_id,
        student.school,
        student.last_name,
        student.first_name,
        student.middle_name,
        student.birth_date,
        student.gender,
        _grade(student),
        student.ssid,
    )


def export_aeries_csv(students: Iterable[ImportedStudent], out_dir: Path) -> Mapping[str, int]:
    """Write ``STU.csv`` and one CSV a record table into ``out_dir``; rows written a file.

    Every file is written (a table nobody has rows of gets its header only),
    all or nothing: the files appear when the last one is complete. Raises
    ``InvalidInput`` (``Staging``) if a file of that name is already there.
    """
    names = ["STU", *ALL_TABLES]
    counts = dict.fromkeys(names, 0)
    with Staging(out_dir, [f"{n}.csv" for n in names]) as staging:
        files = {n: staging.open_text(f"{n}.csv") for n in names}
        _header(files["STU"], STU_COLUMNS)
        for code in ALL_TABLES:
            _header(files[code], record_columns(code))
        for student in students:
            _line(files["STU"], stu_row(student))
            counts["STU"] += 1
            for code, rows in student.rows.items():
                columns = record_columns(code)
                for row in rows:
                    _line(files[code], (_cell(code, c, row) for c in columns))
                counts[code] += len(rows)
    return counts


def _cell(code: str, column: str, row: Mapping[str, Any]) -> Any:
    value = row.get(column)
    if value is None or column == "PID":
        return value
    spec = TABLES[code].by_name[column]
    if spec.kind is ColumnKind.DECIMAL and spec.scale is not None:
        return value.quantize(decimal.Decimal(1).scaleb(-spec.scale))
    return value
