"""The eight record tables, described once, and the generic row conversions.

``TABLES`` ties each Aeries table code to its proto row class, its field in
``RecordBatch``, its natural key and its columns: each column's kind and bounds
(length, decimal precision and scale) are declared here, once, and checked
against ``records.proto`` at import (DESIGN.md section 6). The database tables
of ``rt_server.store.schema`` are built from these specs, so adding a column
means adding it to the proto and to the declarations here (and a migration).
``row_from_proto`` and ``row_to_proto`` are driven by the proto descriptor and
the column kinds.

A *row dict* maps upper-case column codes to Python values: ``str``, ``int``,
``bool``, ``datetime.date``, ``decimal.Decimal`` or ``None`` (the optional field
is unset / the column is NULL). It holds every column of the proto row,
including ``SQ`` (the sender's sequence number) and ``SRC``; never ``PID``.

Round trip rules (wire <-> dict <-> database), so review and import compare like
with like:

- an unset field is ``None`` / NULL; an empty string stays ``""``;
- dates are ISO ``YYYY-MM-DD`` on the wire and ``datetime.date`` here;
- decimals are normalised to the column's scale and kept exact: ``"2.5"``
  becomes ``Decimal("2.50")`` and goes back on the wire as ``"2.50"``. A value
  that would need rounding to fit the scale (``"2.555"`` in a 2-place column)
  is refused, never rounded; ``"-0"`` becomes ``0.00`` (one spelling of zero).
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from protos.rt.v1 import common_pb2, records_pb2
from rt_client.column_names import COLUMN_NAMES
from rt_client.errors import InvalidInput

__all__ = [
    "ALL_TABLES",
    "BOOKKEEPING_COLUMNS",
    "TABLES",
    "ColumnKind",
    "ColumnSpec",
    "TableRef",
    "TableSpec",
    "Unconvertible",
    "format_table_list",
    "normalize_decimal",
    "parse_date",
    "parse_decimal",
    "parse_table_list",
    "row_from_proto",
    "row_problem",
    "row_to_proto",
    "table_spec",
    "table_set",
]

# A table named by its Aeries code ("HIS", case-insensitive) or its TableCode value.
TableRef = str | int

# Columns that say where a row sits, not what it says: excluded when rows are
# compared for duplicates.
BOOKKEEPING_COLUMNS: Final = frozenset({"PID", "SQ", "SRC"})


class ColumnKind(enum.Enum):
    """How a column's value is carried on the wire and held in Python."""

    STRING = "string"
    INT = "int"
    BOOL = "bool"
    DATE = "date"  # wire: "YYYY-MM-DD"
    DECIMAL = "decimal"  # wire: exact decimal string


class Unconvertible(ValueError):
    """A wire value that cannot become a column value; the text names the problem only."""


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a record table, as the wire and the database see it."""

    name: str  # column code, "CN"
    field: str  # proto field name, "cn"
    kind: ColumnKind
    max_length: int | None = None  # STRING: characters
    precision: int | None = None  # DECIMAL: total digits
    scale: int | None = None  # DECIMAL: digits after the point
    required: bool = False  # never NULL in a stored row (SQ); the writer sees to it


@dataclass(frozen=True)
class TableSpec:
    """Everything the code needs to know about one record table."""

    code: str  # Aeries table code, "HIS"
    enum: common_pb2.TableCode.ValueType
    row_class: type[Message]
    batch_field: str  # field of RecordBatch holding these rows, "his"
    natural_key: tuple[str, ...]
    columns: tuple[ColumnSpec, ...]  # every proto-carried column, in proto field order
    column_names: tuple[str, ...]  # the same, names only
    data_columns: tuple[str, ...]  # columns compared for duplicates (no SQ, SRC)
    # The same columns as declared: SQ, the data columns, SRC (the order of the
    # database table's columns, after its PID).
    stored_columns: tuple[ColumnSpec, ...]
    by_field: Mapping[str, ColumnSpec]  # proto field name -> column
    by_name: Mapping[str, ColumnSpec]  # column code -> column


# --- wire value parsing ----------------------------------------------------

_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Plain positional notation only: no exponent, NaN, Infinity, spaces or "+"; the
# length bound keeps a hostile value from costing anything to parse.
_DECIMAL_RE: Final = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,20})?")


def parse_date(text: str) -> dt.date:
    """A real calendar date from ``YYYY-MM-DD``. Raises ``Unconvertible``.

    Stricter than ``date.fromisoformat``, which since 3.11 also takes
    ``20250102`` and week dates: one spelling per date keeps comparison simple.
    """
    if _DATE_RE.fullmatch(text) is None:
        raise Unconvertible("not a date (expected YYYY-MM-DD)")
    try:
        return dt.date(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        raise Unconvertible("not a real calendar date") from None


def parse_decimal(text: str, scale: int) -> decimal.Decimal:
    """An exact decimal from its string, normalised to ``scale`` places.

    Raises ``Unconvertible`` if ``text`` is not a plain decimal number or if it
    has non-zero digits beyond ``scale`` places (we do not round records).
    """
    if _DECIMAL_RE.fullmatch(text) is None:
        raise Unconvertible("not a decimal number")
    return normalize_decimal(decimal.Decimal(text), scale)


# Raise on any rounding instead of rounding silently; precision is ample for
# the bounded inputs above.
_EXACT: Final = decimal.Context(prec=60, traps=[decimal.Inexact, decimal.InvalidOperation])


def normalize_decimal(value: decimal.Decimal, scale: int) -> decimal.Decimal:
    """``value`` with exactly ``scale`` places. Raises ``Unconvertible`` if that would round."""
    if not value.is_finite():
        raise Unconvertible("not a finite decimal number")
    quantum = decimal.Decimal(1).scaleb(-scale)
    try:
        exact = value.quantize(quantum, context=_EXACT)
    except decimal.DecimalException:
        raise Unconvertible(f"has more than {scale} decimal places") from None
    # One spelling of zero: "-0.00" would otherwise compare equal but print differently.
    return exact if exact else abs(exact)


# --- the registry ------------------------------------------------------------


def _text(name: str, max_length: int) -> ColumnSpec:
    return ColumnSpec(name, name.lower(), ColumnKind.STRING, max_length=max_length)


def _int(name: str) -> ColumnSpec:
    return ColumnSpec(name, name.lower(), ColumnKind.INT)


def _bool(name: str) -> ColumnSpec:
    return ColumnSpec(name, name.lower(), ColumnKind.BOOL)


def _date(name: str) -> ColumnSpec:
    return ColumnSpec(name, name.lower(), ColumnKind.DATE)


# Decimals keep two places: credits (2.50) and scores (12.75) are exact, and a
# value with more places is refused by validation rather than rounded.
def _credit(name: str) -> ColumnSpec:
    return ColumnSpec(name, name.lower(), ColumnKind.DECIMAL, precision=6, scale=2)


def _score(name: str) -> ColumnSpec:
    return ColumnSpec(name, name.lower(), ColumnKind.DECIMAL, precision=9, scale=2)


@dataclass(frozen=True)
class _Declared:
    """One record table as declared below: its natural key and its data columns."""

    code: str
    natural_key: tuple[str, ...]
    data: tuple[ColumnSpec, ...]


# Every row begins with the sender's sequence number (never NULL once stored:
# whoever writes the row assigns it) and ends with where the row came from.
_SQ: Final = ColumnSpec("SQ", "sq", ColumnKind.INT, required=True)
_SRC: Final = _text("SRC", 8)

# The eight tables (DESIGN.md section 6), in transfer order, with Aeries' codes.
# The bounds here are what validation enforces on rows from outside and what
# ``rt_server.store.schema`` makes the database columns: a length here is a
# promise about what can be stored.
_DECLARED: Final = (
    _Declared(
        "TST",
        ("ID", "PT", "TA"),
        (
            _text("ID", 16),  # test id
            _int("PT"),  # part (0 = overall)
            _text("TA", 16),  # administration, e.g. "2023-24 SPR"
            _date("TD"),  # test date
            _int("GR"),  # grade x10, as Aeries stores it
            _text("TY", 8),  # test type
            _int("SS"),  # scale score
            _text("PL", 8),  # performance level
            _int("PC"),  # percentile
        ),
    ),
    _Declared(
        "CST",
        ("ID", "SD", "TA"),
        (
            _text("ID", 16),  # test id
            _text("SD", 32),  # content standard id
            _text("TA", 16),  # administration
            _date("TD"),  # test date
            _score("SC"),  # score
            _text("PL", 8),  # performance level
        ),
    ),
    _Declared(
        "CTS",
        ("NM", "DT"),
        (
            _text("NM", 16),  # test name (SAT, ACT, AP ...)
            _date("DT"),  # test date
            _int("TTL"),  # total score
            # subtests 1..13: name, score
            *(column for n in range(1, 14) for column in (_text(f"ST{n}", 32), _int(f"SC{n}"))),
        ),
    ),
    _Declared(
        "HIS",
        ("YR", "TE", "CN", "ST"),
        (
            _text("YR", 9),  # school year, "2023-2024"
            _int("GR"),  # grade
            _text("TE", 4),  # term
            _text("CN", 12),  # course number
            _text("CO", 60),  # course title
            _text("MK", 4),  # mark
            _credit("CR"),  # credit attempted
            _credit("CC"),  # credit completed
            _text("ST", 14),  # school (CDS code or local school number)
            _text("CI", 2),  # citizenship
            _text("RT", 2),  # repeat tag
            _date("DC"),  # date changed
            _text("CH", 2),  # honors / course credit flag
            _text("PF", 2),  # pass/fail flag
        ),
    ),
    _Declared(
        "ENR",
        ("SC", "YR", "ED"),
        (
            _text("SC", 14),  # school
            _text("YR", 9),  # school year
            _int("GR"),  # grade
            _date("ED"),  # enter date
            _date("LD"),  # leave date
            _text("ER", 4),  # exit reason (CALPADS exit code)
        ),
    ),
    _Declared(
        "IMM",
        ("VC", "DT"),
        (
            _text("VC", 10),  # vaccine code (CVX or state code)
            _int("DN"),  # dose number
            _date("DT"),  # dose date
        ),
    ),
    _Declared(
        "LAC",
        ("AC", "AD"),
        (
            _text("L1", 4),  # first language (CALPADS language code)
            _text("L2", 4),  # primary language
            _text("L3", 4),  # home language
            _text("AC", 12),  # assessment code (ELPAC, CELDT, ...)
            _date("AD"),  # assessment date
            _text("LV", 16),  # level
        ),
    ),
    _Declared(
        "PFT",
        ("TD", "CP"),
        (
            _date("TD"),  # test date
            _text("CP", 32),  # component (aerobic capacity, ...)
            _score("SC"),  # score
            _bool("HF"),  # in the healthy fitness zone
            _int("GR"),  # grade
        ),
    ),
)

# What each column kind must be carried as on the wire.
_WIRE_TYPE: Final[dict[ColumnKind, int]] = {
    ColumnKind.STRING: FieldDescriptor.TYPE_STRING,
    ColumnKind.DATE: FieldDescriptor.TYPE_STRING,
    ColumnKind.DECIMAL: FieldDescriptor.TYPE_STRING,
    ColumnKind.INT: FieldDescriptor.TYPE_INT32,
    ColumnKind.BOOL: FieldDescriptor.TYPE_BOOL,
}


def _table_spec(declared: _Declared, batch_field: FieldDescriptor) -> TableSpec:
    """The spec of one declared table, its columns checked against its proto row."""
    code = declared.code
    row_descriptor = batch_field.message_type
    assert row_descriptor is not None
    stored = (_SQ, *declared.data, _SRC)
    by_name = {c.name: c for c in stored}
    if len(by_name) != len(stored):
        raise RuntimeError(f"{code}: a column is declared twice")
    unknown_key = set(declared.natural_key) - by_name.keys()
    if unknown_key:
        raise RuntimeError(f"{code}: natural key columns {sorted(unknown_key)} are not declared")
    columns = []
    for field in row_descriptor.fields:
        column = by_name.get(field.name.upper())
        if column is None:
            raise RuntimeError(f"{code}: proto field {field.name!r} has no declared column")
        if field.type != _WIRE_TYPE[column.kind] or not field.has_presence:
            raise RuntimeError(f"{code}.{column.name}: proto field type does not fit the column")
        columns.append(column)
    unnamed = by_name.keys() - COLUMN_NAMES.get(code, {}).keys()
    if unnamed:  # the console shows each code with its name (rt_client.column_names)
        raise RuntimeError(f"{code}: columns {sorted(unnamed)} have no name in COLUMN_NAMES")
    missing = by_name.keys() - {c.name for c in columns}
    if missing:
        raise RuntimeError(f"{code}: columns {sorted(missing)} missing in {row_descriptor.name}")
    names = tuple(c.name for c in columns)
    return TableSpec(
        code=code,
        enum=common_pb2.TableCode.Value(code),
        row_class=getattr(records_pb2, row_descriptor.name),
        batch_field=batch_field.name,
        natural_key=declared.natural_key,
        columns=tuple(columns),
        column_names=names,
        data_columns=tuple(n for n in names if n not in BOOKKEEPING_COLUMNS),
        stored_columns=stored,
        by_field={c.field: c for c in columns},
        by_name=by_name,
    )


def _build_registry() -> dict[str, TableSpec]:
    """Every TableSpec, from the declarations above and the proto descriptors.

    Runs once at import; it only reads constants, and fails loudly if the
    proto and the declarations disagree (a column missing on either side, or
    carried as the wrong wire type).
    """
    batch = records_pb2.RecordBatch.DESCRIPTOR
    return {d.code: _table_spec(d, batch.fields_by_name[d.code.lower()]) for d in _DECLARED}


TABLES: Final[Mapping[str, TableSpec]] = _build_registry()
# The order of a transfer and of every listing: TST, CST, CTS, HIS, ENR, IMM, LAC, PFT.
ALL_TABLES: Final[tuple[str, ...]] = tuple(TABLES)
_BY_ENUM: Final[dict[int, TableSpec]] = {spec.enum: spec for spec in TABLES.values()}


def table_spec(table: TableRef | TableSpec) -> TableSpec:
    """The spec of ``table`` ("HIS", "his" or ``common_pb2.HIS``). Raises ``InvalidInput``."""
    if isinstance(table, TableSpec):
        return table
    spec: TableSpec | None
    if isinstance(table, str):
        spec = TABLES.get(table.upper())
    else:
        spec = _BY_ENUM.get(table)
    if spec is None:
        raise InvalidInput("unknown record table: expected one of " + ", ".join(ALL_TABLES))
    return spec


def table_set(tables: Iterable[TableRef], *, empty_means_all: bool = False) -> tuple[str, ...]:
    """Table codes in transfer order, without repeats. Raises ``InvalidInput`` for unknown ones."""
    wanted = {table_spec(t).code for t in tables}
    if not wanted and empty_means_all:
        return ALL_TABLES
    return tuple(code for code in ALL_TABLES if code in wanted)


def format_table_list(tables: Iterable[TableRef]) -> str:
    """The stored form of a table list: ``"TST,HIS"`` in transfer order."""
    return ",".join(table_set(tables))


def parse_table_list(tables: str | Iterable[TableRef] | None) -> tuple[str, ...]:
    """The tables of a stored ``"TST,HIS"`` list (empty or NULL: none), in transfer order.

    Also takes an already parsed list (e.g. ``RequestRecord.tables_requested``).
    """
    if not tables:
        return ()
    return table_set(tables.split(",") if isinstance(tables, str) else tables)


# --- conversions ---------------------------------------------------------------


def _same(column: ColumnSpec, value: Any) -> Any:
    return value


def _date_from_wire(column: ColumnSpec, value: Any) -> Any:
    return parse_date(value)


def _decimal_from_wire(column: ColumnSpec, value: Any) -> Any:
    assert column.scale is not None
    return parse_decimal(value, column.scale)


_FROM_WIRE: Final[dict[ColumnKind, Callable[[ColumnSpec, Any], Any]]] = {
    ColumnKind.STRING: _same,
    ColumnKind.INT: _same,
    ColumnKind.BOOL: _same,
    ColumnKind.DATE: _date_from_wire,
    ColumnKind.DECIMAL: _decimal_from_wire,
}


def row_problem(spec: TableSpec, column: str | None, problem: str, index: int | None) -> str:
    """An error text naming table, row and column, never the value (it may be student data)."""
    where = spec.code if index is None else f"{spec.code} row {index}"
    if column is not None:
        where += f", column {column}"
    return f"{where}: {problem}"


def row_from_proto(
    table: TableRef | TableSpec, msg: Message, *, index: int | None = None
) -> dict[str, Any]:
    """The row dict of a proto row of ``table`` (see the module docstring).

    Raises ``InvalidInput`` (naming table, ``index`` if given, and column) when
    ``msg`` is not a row of ``table`` or a date/decimal cannot be converted.
    It does not check bounds (string lengths, decimal precision): that is
    ``rt_server.core.validate``'s job, and ``validate_batch`` does both.
    """
    spec = table_spec(table)
    if msg.DESCRIPTOR is not spec.row_class.DESCRIPTOR:
        raise InvalidInput(row_problem(spec, None, "not a row of this table", index))
    row: dict[str, Any] = dict.fromkeys(spec.column_names)
    by_field = spec.by_field
    # ListFields returns only the fields that are set, which for proto3
    # `optional` fields includes set-to-default ("" or 0): exactly "not NULL".
    for field, value in msg.ListFields():
        column = by_field.get(field.name)
        if column is None:
            continue  # not possible for a message of row_class; keeps mypy honest
        try:
            row[column.name] = _FROM_WIRE[column.kind](column, value)
        except Unconvertible as exc:
            raise InvalidInput(row_problem(spec, column.name, str(exc), index)) from None
    return row


def _to_wire(column: ColumnSpec, value: Any) -> Any:
    kind = column.kind
    if kind is ColumnKind.DATE:
        if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
            raise TypeError(f"column {column.name} needs a datetime.date")
        return value.isoformat()
    if kind is ColumnKind.DECIMAL:
        assert column.scale is not None
        if not isinstance(value, decimal.Decimal):
            # int is exact; float is refused: it may already have been rounded.
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"column {column.name} needs a decimal.Decimal")
            value = decimal.Decimal(value)
        # "f": never exponent notation (str(Decimal("0E-2")) is "0E-2").
        return format(normalize_decimal(value, column.scale), "f")
    return value


def row_to_proto(table: TableRef | TableSpec, row: Mapping[Any, Any]) -> Message:
    """The proto row of ``table`` carrying ``row`` (a row dict or a database row mapping).

    ``None`` and missing columns leave the field unset; keys that are not
    proto columns (``PID``) are ignored. Raises ``TypeError`` / ``Unconvertible``
    for a value of the wrong type, which is a bug in the caller, not bad input.
    """
    spec = table_spec(table)
    fields: dict[str, Any] = {}
    for column in spec.columns:
        value = row.get(column.name)
        if value is not None:
            fields[column.field] = _to_wire(column, value)
    return spec.row_class(**fields)
