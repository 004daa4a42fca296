"""Reading an Aeries table export: one CSV file per table, header row = Aeries column codes.

The files a folder may hold: ``STU.csv`` (the students: ``ID`` the local id,
``SC`` school, ``LN`` ``FN`` ``MN`` names, ``BD`` birth date, ``SX`` gender,
``GR`` grade, ``CID`` or ``SSID`` the statewide id) and one file per record
table (``TST.csv`` ... ``PFT.csv``) whose columns are the codes of
``rt_server.core.tables`` plus ``PID``, the student's ``ID``. ``SQ`` may be
present and is ignored: rows are matched by their natural key and numbered by
the loader. A column missing from a header is left alone on a row that exists
and empty on a new one; the student id and the natural key columns are required.

Files are read row by row (memory stays flat): each physical line is read
with a bound (``MAX_LINE_BYTES``) and decoded as UTF-8 on its own, so a wrong
encoding or an endless line is named by its line number, and the ``csv``
module's ``field_size_limit`` is set to ``MAX_FIELD_BYTES`` (process-wide;
every column we store is far shorter) so a quoted field spanning lines is
bounded too. Every problem is a ``Problem`` naming file, line and column:
``HIS.csv line 4012, column YR: "2O24" is not a year``. The admin's own file
is quoted back to them, cut to ``_QUOTE_LEN`` characters.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from rt_client.errors import InvalidInput
from rt_server.core.tables import (
    ALL_TABLES,
    TABLES,
    ColumnKind,
    ColumnSpec,
    TableSpec,
    Unconvertible,
    parse_date,
    parse_decimal,
)
from rt_server.core.validate import CheckedRows, check_rows, validate_row

__all__ = [
    "MAX_FIELD_BYTES",
    "MAX_LINE_BYTES",
    "STUDENT_COLUMNS",
    "STUDENT_FILE",
    "ExportFile",
    "Problem",
    "check_record_rows",
    "export_files",
    "quoted",
    "read_rows",
]

STUDENT_FILE: Final = "STU"
# Aeries' STU column -> the field of ``registrar_pb2.Student`` it fills (None: read, not kept).
STUDENT_COLUMNS: Final[dict[str, str | None]] = {
    "ID": "local_id",
    "SC": "school",
    "LN": "legal_last_name",
    "FN": "legal_first_name",
    "MN": "legal_middle_name",
    "BD": "birth_date",
    "SX": "gender",
    "GR": None,  # the grade: ours is per record row (ENR.GR), not per student
    "CID": "ssid",
    "SSID": "ssid",
}
_STUDENT_REQUIRED: Final = ("ID", "LN", "FN", "BD")
# Bounds on one line and one field of a file: the widest column we store is 60
# characters; these leave room for a comment column we ignore, and refuse an
# 80 MB field before it is held.
MAX_LINE_BYTES: Final = 1024 * 1024
MAX_FIELD_BYTES: Final = 64 * 1024
_QUOTE_LEN: Final = 40
_CACHE_SIZE: Final = 4096  # distinct dates / decimals remembered per column
_YEAR_RE: Final = re.compile(r"[0-9]{4}(?:-[0-9]{2}(?:[0-9]{2})?)?")
_INT_RE: Final = re.compile(r"-?[0-9]{1,10}")
_US_DATE_RE: Final = re.compile(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})")
_TRUE: Final = frozenset({"Y", "YES", "TRUE", "T", "1"})
_FALSE: Final = frozenset({"N", "NO", "FALSE", "F", "0"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an export, where it is."""

    file: str  # "HIS.csv"
    line: int | None
    column: str | None
    text: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f" line {self.line}"
        if self.column is not None:
            where += f", column {self.column}"
        return f"{where}: {self.text}"


@dataclass(frozen=True)
class ExportFile:
    """One table file of an export."""

    code: str  # "STU", "HIS"
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


def quoted(value: str) -> str:
    """``value`` as the file has it, in quotes, cut short."""
    if len(value) > _QUOTE_LEN:
        value = value[:_QUOTE_LEN] + "..."
    return '"' + value.replace('"', '\\"') + '"'


def export_files(folder: Path) -> tuple[list[ExportFile], list[Problem]]:
    """The table files of ``folder`` (STU first, then transfer order) and the unknown ones.

    Files not ending in ``.csv`` are ignored. Raises ``InvalidInput`` if
    ``folder`` is not a folder or holds no CSV file.
    """
    shown = str(folder)[:200]
    hint = "give the folder of the Aeries export"
    try:
        paths = sorted(folder.iterdir())
    except FileNotFoundError:
        raise InvalidInput(f"{shown}: no such folder ({hint})") from None
    except NotADirectoryError:
        raise InvalidInput(f"{shown}: not a folder ({hint})") from None
    except OSError as exc:  # unreadable, or a name too long for the file system
        raise InvalidInput(f"{shown}: cannot read this folder ({exc.strerror}); {hint}") from None
    known = (STUDENT_FILE, *ALL_TABLES)
    found: dict[str, ExportFile] = {}
    problems = []
    for path in paths:
        if not path.is_file() or path.suffix.lower() != ".csv":
            continue
        code = path.stem.upper()
        if code not in known:
            problems.append(
                Problem(
                    path.name,
                    None,
                    None,
                    "not a table this loads: expected " + ", ".join(f"{k}.csv" for k in known),
                )
            )
        elif code in found:
            problems.append(Problem(path.name, None, None, f"a second file of table {code}"))
        else:
            found[code] = ExportFile(code, path)
    if not found and not problems:
        raise InvalidInput(f"{folder}: no CSV files (expected STU.csv and the record tables)")
    return [found[k] for k in known if k in found], problems


def _columns_of(code: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """(allowed header columns, required ones) of a table file."""
    if code == STUDENT_FILE:
        return frozenset(STUDENT_COLUMNS), _STUDENT_REQUIRED
    spec = TABLES[code]
    return frozenset({"PID", *spec.column_names}), ("PID", *spec.natural_key)


def _header_problems(file: ExportFile, header: Sequence[str]) -> list[Problem]:
    allowed, required = _columns_of(file.code)
    problems = []
    seen: set[str] = set()
    for name in header:
        if name not in allowed:
            problems.append(
                Problem(
                    file.name,
                    1,
                    None,
                    f"header: {quoted(name)} is not a column of {file.code} "
                    f"(expected Aeries column codes: {', '.join(sorted(allowed))})",
                )
            )
        elif name in seen:
            problems.append(Problem(file.name, 1, name, "header: the column appears twice"))
        seen.add(name)
    if file.code == STUDENT_FILE and {"CID", "SSID"} <= seen:
        problems.append(
            Problem(file.name, 1, None, "header: give the SSID as CID or SSID, not both")
        )
    missing = [name for name in required if name not in seen]
    if missing:
        problems.append(
            Problem(file.name, 1, None, "header: missing required column(s) " + ", ".join(missing))
        )
    return problems


class _Lines:
    """The UTF-8 lines of a binary file, each bounded, with the physical line number."""

    def __init__(self, stream: IO[bytes], file: ExportFile) -> None:
        self._stream, self._file = stream, file
        self.number = 0
        self.last = ""  # the last line read (to tell a quoted empty text from no value)
        self.problem: Problem | None = None

    def __iter__(self) -> Iterator[str]:
        while True:
            raw = self._stream.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            self.number += 1
            if self.number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # the byte order mark Excel writes
            if len(raw) > MAX_LINE_BYTES:
                self.problem = Problem(
                    self._file.name,
                    self.number,
                    None,
                    f"the line is longer than {MAX_LINE_BYTES // 1024} KiB: not an Aeries "
                    "table export (the file is refused whole)",
                )
                return
            if not raw.endswith(b"\n"):
                self.problem = Problem(
                    self._file.name,
                    self.number,
                    None,
                    "the file ends in the middle of a line: it was cut short (copy the export "
                    "again)",
                )
                return
            try:
                self.last = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.problem = Problem(
                    self._file.name,
                    self.number,
                    None,
                    f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at character {exc.start + 1}): "
                    "export the table again as UTF-8 (CSV UTF-8 in Excel)",
                )
                return
            yield self.last


# Stands for a quoted empty field ("") among a row's fields: an empty text, not "no value".
QUOTED_EMPTY: Final = "\x00"


def _quoted_empty(line: str, fields: Sequence[str]) -> list[int]:
    """Positions of the fields of one CSV line that are exactly ``""`` (RFC 4180).

    ``fields``: the line as the csv module (strict) read it; each field's
    width in the line follows from its text and whether it opens with a quote.
    """
    found: list[int] = []
    at = 0
    for i, text in enumerate(fields):
        if line.startswith('"', at):
            if not text:
                found.append(i)
            at += len(text) + text.count('"') + 3  # the quotes and the comma
        else:
            at += len(text) + 1
    return found


def read_rows(file: ExportFile) -> Iterator[tuple[int, dict[str, Any]] | Problem]:
    """The rows of ``file`` as (line, row) or the ``Problem``s that stop them.

    A STU row maps ``registrar_pb2.Student`` field names to the file's text
    (empty: ``None``); a record row maps ``PID`` and the header's columns to
    values of their kind (``None`` where empty), unchecked against the column
    bounds (``check_record_rows`` does that). A bad value is a ``Problem``
    and the reading goes on; a bad header, encoding, line or CSV syntax ends
    the file (nothing after it can be trusted).
    """
    csv.field_size_limit(MAX_FIELD_BYTES)
    with file.path.open("rb") as stream:
        lines = _Lines(stream, file)
        reader = csv.reader(iter(lines), strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            yield Problem(file.name, 1, None, f"header: not CSV ({exc})")
            return
        if header is None:
            yield lines.problem or Problem(file.name, None, None, "the file is empty (no header)")
            return
        header = [name.strip().upper() for name in header]
        header_problems = _header_problems(file, header)
        if header_problems:
            yield from header_problems
            return
        convert = _student_row if file.code == STUDENT_FILE else _record_converter(file, header)
        start = lines.number + 1
        try:
            for fields in reader:
                line, start = start, lines.number + 1
                if not fields:
                    continue  # a blank line
                if len(fields) != len(header):
                    yield Problem(
                        file.name,
                        line,
                        None,
                        f"{len(fields)} fields where the header has {len(header)}",
                    )
                    continue
                last = lines.last
                if (
                    line == lines.number
                    and (',""' in last or last.startswith('""'))
                    and "" in fields
                ):
                    # A quoted empty field is an empty text, an unquoted one no
                    # value (how ``rt sis export`` writes them); the csv module
                    # cannot tell them apart, so the line is looked at again.
                    for i in _quoted_empty(last, fields):
                        fields[i] = QUOTED_EMPTY
                yield from convert(file, header, line, fields)
        except csv.Error as exc:
            if lines.problem is None:
                text = str(exc)
                if "field larger than field limit" in text:
                    text = (
                        f"a field is longer than {MAX_FIELD_BYTES // 1024} KiB "
                        "(csv.field_size_limit): not an Aeries table export"
                    )
                yield Problem(file.name, lines.number, None, f"not valid CSV: {text}")
        if lines.problem is not None:
            yield lines.problem


def _student_row(
    file: ExportFile, header: Sequence[str], line: int, fields: Sequence[str]
) -> Iterator[tuple[int, dict[str, Any]] | Problem]:
    row: dict[str, Any] = {}
    for name, text in zip(header, fields, strict=True):
        target = STUDENT_COLUMNS[name]
        if target is not None:
            text = "" if text == QUOTED_EMPTY else text.strip()
            row[target] = _iso_date(text) if target == "birth_date" else (text or None)
    yield line, row


def _iso_date(text: str) -> str:
    """``M/D/YYYY`` (how Aeries and Excel write dates) as ``YYYY-MM-DD``; other text unchanged."""
    us = _US_DATE_RE.fullmatch(text)
    return f"{us[3]}-{int(us[1]):02d}-{int(us[2]):02d}" if us else text


def _to_date(column: ColumnSpec, text: str) -> dt.date:
    return parse_date(_iso_date(text))


def _to_int(column: ColumnSpec, text: str) -> int:
    if _INT_RE.fullmatch(text) is None:
        raise Unconvertible("is not a whole number")
    return int(text)


def _to_bool(column: ColumnSpec, text: str) -> bool:
    upper = text.upper()
    if upper in _TRUE:
        return True
    if upper in _FALSE:
        return False
    raise Unconvertible("is not Y or N")


def _to_decimal(column: ColumnSpec, text: str) -> Any:
    assert column.scale is not None
    return parse_decimal(text, column.scale)


def _to_text(column: ColumnSpec, text: str) -> str:
    if column.name == "YR" and _YEAR_RE.fullmatch(text) is None:
        raise Unconvertible("is not a year")
    return text


_CONVERTERS: Final[dict[ColumnKind, Callable[[ColumnSpec, str], Any]]] = {
    ColumnKind.STRING: _to_text,
    ColumnKind.INT: _to_int,
    ColumnKind.BOOL: _to_bool,
    ColumnKind.DATE: _to_date,
    ColumnKind.DECIMAL: _to_decimal,
}


def _cached(column: ColumnSpec, convert: Callable[[ColumnSpec, str], Any]) -> Callable[[str], Any]:
    """``convert`` for one column, each distinct text converted once (dates and decimals
    repeat); the cache is emptied when it fills, so memory stays flat."""
    cache: dict[str, Any] = {}

    def converted(text: str) -> Any:
        value = cache.get(text)
        if value is None:
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            value = cache[text] = convert(column, text)
        return value

    return converted


def _plain(convert: Callable[[ColumnSpec, str], Any], column: ColumnSpec) -> Callable[[str], Any]:
    return lambda text: convert(column, text)


def _converter_of(column: ColumnSpec) -> Callable[[str], Any] | None:
    """How a column's text becomes its value (``None``: the text is the value)."""
    if column.kind is ColumnKind.STRING and column.name != "YR":
        return None
    if column.kind in (ColumnKind.DATE, ColumnKind.DECIMAL):
        return _cached(column, _CONVERTERS[column.kind])
    return _plain(_CONVERTERS[column.kind], column)


def _record_converter(
    file: ExportFile, header: Sequence[str]
) -> Callable[
    [ExportFile, Sequence[str], int, Sequence[str]],
    Iterable[tuple[int, dict[str, Any]] | Problem],
]:
    spec = TABLES[file.code]
    pid_at = header.index("PID")
    # (position, column code, converter) of every data column; SQ is not read.
    plan = [
        (i, name, _converter_of(spec.by_name[name]))
        for i, name in enumerate(header)
        if name not in ("SQ", "PID")
    ]

    def checked(
        file: ExportFile, header: Sequence[str], line: int, fields: Sequence[str]
    ) -> Iterator[tuple[int, dict[str, Any]] | Problem]:
        """The row, or every problem of it named (the slow path, and the reference)."""
        pid = fields[pid_at].strip()
        row: dict[str, Any] = {"PID": pid}
        bad = not pid
        if bad:
            yield Problem(file.name, line, "PID", "the student id is empty")
        for i, name, to_value in plan:
            text = fields[i]
            if text == "":
                row[name] = None
            elif to_value is None:
                row[name] = "" if text == QUOTED_EMPTY else text
            else:
                text = "" if text == QUOTED_EMPTY else text
                try:
                    row[name] = to_value(text)
                except Unconvertible as exc:
                    bad = True
                    yield Problem(file.name, line, name, f"{quoted(text)} {_is(str(exc))}")
        if not bad:
            yield line, row

    def convert(
        file: ExportFile, header: Sequence[str], line: int, fields: Sequence[str]
    ) -> Iterable[tuple[int, dict[str, Any]] | Problem]:
        # The common case, a clean row, without a generator or the checks of
        # ``checked``; anything else (a bad value, an empty id, a quoted empty
        # text) goes the slow way, which names every problem.
        pid = fields[pid_at].strip()
        if pid and QUOTED_EMPTY not in fields:
            row: dict[str, Any] = {"PID": pid}
            try:
                for i, name, to_value in plan:
                    text = fields[i]
                    if text == "":
                        row[name] = None
                    elif to_value is None:
                        row[name] = text
                    else:
                        row[name] = to_value(text)
            except Unconvertible:
                pass
            else:
                return ((line, row),)
        return tuple(checked(file, header, line, fields))

    return convert


def _is(problem: str) -> str:
    """A converter's problem as a predicate of the quoted value."""
    if problem.startswith(("is ", "has ", "contains ", "must ")):
        return problem
    return "is " + problem


def check_record_rows(
    spec: TableSpec, file: str, rows: Sequence[dict[str, Any]], lines: Sequence[int]
) -> tuple[CheckedRows | None, list[Problem]]:
    """``rows`` (as ``read_rows`` gives them, ``PID`` removed) checked as a peer's rows are.

    The bounds of ``rt_server.core.validate``; returns the checked rows, or
    ``None`` and a problem for each bad value.
    """
    try:
        return check_rows(spec, rows, lines), []
    except InvalidInput:
        pass
    problems = []
    for row, line in zip(rows, lines, strict=True):
        for name, value in row.items():
            if value is None:
                continue
            try:
                validate_row(spec, {name: value})
            except InvalidInput as exc:
                text = str(exc).removeprefix(f"{spec.code}, column {name}: ")
                problems.append(Problem(file, line, name, f"{quoted(str(value))} {_is(text)}"))
    return None, problems
