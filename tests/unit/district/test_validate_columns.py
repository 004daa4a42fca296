"""The batch (column by column) validation agrees with the row-by-row reference, value for value.

``validate_batch`` / ``check_batch`` / ``checked_batch`` / ``check_rows`` /
``recheck`` check a batch a column at a time and fall back to the row-by-row
path only to name a bad row; these tests hold them to that path
(``row_from_proto`` + ``validate_row``, one row at a time) on random messages
and row dicts, good and bad: the same rows, spelled the same (``repr``: 2.50,
never 2.5), or the same ``InvalidInput`` naming the same row and column. A good
batch must also pass the column path itself, without falling back: the
fallback would give the same rows, only a row at a time.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protos.rt.v1 import records_pb2
from rt_client.errors import InvalidInput
from rt_server.core import validate
from rt_server.core.tables import TABLES, ColumnKind, ColumnSpec, TableSpec, row_from_proto
from rt_server.core.validate import (
    CheckedRows,
    check_batch,
    check_rows,
    checked_batch,
    recheck,
    validate_batch,
    validate_row,
)
from scripts import samples


def _reference(batch: records_pb2.RecordBatch, first_index: int = 0) -> list[dict[str, Any]] | str:
    """What the row-by-row path gives: the rows, or the error text."""
    spec = next(s for s in TABLES.values() if s.enum == batch.table)
    try:
        return [
            validate_row(
                spec, row_from_proto(spec, m, index=first_index + i), index=first_index + i
            )
            for i, m in enumerate(getattr(batch, spec.batch_field))
        ]
    except InvalidInput as exc:
        return str(exc)


def _outcome(call: Any) -> Any:
    try:
        return call()
    except InvalidInput as exc:
        return str(exc)


_TEXT = st.text(alphabet=st.sampled_from("aZ09 -ñ'\x00\u00e9\u4e2d"), max_size=70)
_DATES = st.one_of(
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 1, 1)).map(dt.date.isoformat),
    st.sampled_from(["", "2025-02-30", "20250102", "2025-1-02", "x"]),
)
# Spellings at the edges of the decimal short cuts: random draws meet each one
# rarely, so the ``test_every_edge_decimal_*`` tests try each one.
_WIRE_DECIMAL_EDGES = [
    "",
    "-0",
    "-0.00",
    "2.5",
    "2.555",
    "1e3",
    "NaN",
    "10000.00",
    "9999.99",
    "00.50",
    "0.5",
    "-0.50",
    "0",
    "99999.99",
    "999999999.99",
    "1.",
    ".5",
]
_PYTHON_DECIMAL_EDGES = [
    Decimal(s)
    for s in (
        "-0",
        "-0.00",
        "0.00",
        "2.5",
        "2.50",
        "9999.99",
        "10000.00",
        "-9999.99",
        "1E+2",
        "sNaN",
        "0E-5",
        "-0E+3",
    )
]
_DECIMALS = st.one_of(
    st.decimals(min_value=-99999, max_value=99999, places=2, allow_nan=False).map(str),
    st.sampled_from(_WIRE_DECIMAL_EDGES),
)


def _value(column: ColumnSpec) -> st.SearchStrategy[Any]:
    if column.kind is ColumnKind.STRING:
        return _TEXT
    if column.kind is ColumnKind.INT:
        return st.integers(min_value=-(2**31), max_value=2**31 - 1)
    if column.kind is ColumnKind.BOOL:
        return st.booleans()
    if column.kind is ColumnKind.DATE:
        return _DATES
    return _DECIMALS


@st.composite
def _batches(draw: st.DrawFn) -> records_pb2.RecordBatch:
    spec = draw(st.sampled_from(list(TABLES.values())))
    rows = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        fields = {}
        for column in spec.columns:
            if draw(st.booleans()):  # set (possibly to its default) or left unset
                fields[column.field] = draw(_value(column))
        rows.append(spec.row_class(**fields))
    batch = records_pb2.RecordBatch(table=spec.enum)
    getattr(batch, spec.batch_field).extend(rows)
    return batch


def _columns(spec: TableSpec, rows: list[dict[str, Any]]) -> list[str]:
    """``rows`` as columns (``spec.columns`` order), each value by its ``repr``."""
    return [repr([row[name] for row in rows]) for name in spec.column_names]


def _spelled(checked: CheckedRows) -> list[str]:
    return [repr(values) for values in checked.columns]


@settings(max_examples=400, deadline=None)
@given(batch=_batches(), first=st.integers(min_value=0, max_value=10_000))
def test_batch_checks_agree_with_the_row_by_row_reference(
    batch: records_pb2.RecordBatch, first: int
) -> None:
    expected = _reference(batch, first)
    got = _outcome(lambda: validate_batch(batch, first_index=first)[1])
    assert got == expected
    counted = _outcome(lambda: check_batch(batch, first_index=first)[1])
    assert counted == (expected if isinstance(expected, str) else len(expected))
    columns = _outcome(lambda: checked_batch(batch, first_index=first))
    if isinstance(expected, str):
        assert columns == expected
        return
    assert isinstance(columns, CheckedRows)
    spec = columns.spec
    assert _spelled(columns) == _columns(spec, expected)
    # What the importer does with it next: recheck, and check_rows on the dicts.
    assert _spelled(recheck(columns, first_index=first)) == _columns(spec, expected)
    indexes = range(first, first + len(expected))
    assert _spelled(check_rows(spec, expected, indexes)) == _columns(spec, expected)
    # The column path took it, every column, without the row-by-row fallback.
    messages = list(getattr(batch, spec.batch_field))
    refused = [
        column.name
        for column, check in zip(spec.columns, validate._WIRE_VALIDATORS[spec.code], strict=True)
        if check(messages) is None
    ]
    assert refused == []


def test_sample_records_take_the_column_path_and_keep_their_values() -> None:
    for batch in samples.sample_batches(random.Random(3)):
        expected = _reference(batch)
        assert validate_batch(batch)[1] == expected
        checked = checked_batch(batch)
        assert recheck(checked, first_index=0).dicts() == expected


def test_set_defaults_are_values_and_unset_fields_are_null() -> None:
    batch = records_pb2.RecordBatch(table=TABLES["PFT"].enum)
    batch.pft.add(sq=0, cp="", hf=False, gr=0, sc="0.00")
    batch.pft.add()
    rows = validate_batch(batch)[1]
    assert rows[0] == {"SQ": 0, "TD": None, "CP": "", "SC": Decimal("0.00"), "HF": False,
                       "GR": 0, "SRC": None}  # fmt: skip
    assert set(rows[1].values()) == {None}


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("CO", 5, "must be text"),
        ("GR", True, "must be a whole number"),
        ("GR", 2**31, "out of range"),
        ("CR", 2.5, "must be a decimal number"),
        ("CR", Decimal("sNaN"), "not a finite decimal number"),
        ("DC", dt.datetime(2024, 1, 1), "must be a date"),
        ("CO", "\ud800", "not valid Unicode text"),
        ("PID", "S1", "no such column"),
    ],
)
def test_check_rows_names_the_bad_row_as_validate_row_does(
    column: str, value: object, problem: str
) -> None:
    good = {"CN": "1101", "CR": Decimal("5")}
    rows = [good, good, {**good, column: value}]
    with pytest.raises(InvalidInput, match=f"^HIS row 12, column {column}: .*{problem}"):
        check_rows("HIS", rows, [10, 11, 12])


def test_check_rows_normalises_like_validate_row() -> None:
    rows = [{"CR": Decimal("2.5"), "CO": ""}, {"CR": Decimal("-0"), "DC": dt.date(2024, 6, 1)}]
    checked = check_rows("HIS", rows, [0, 1])
    assert checked.dicts() == [validate_row("HIS", r) for r in rows]
    assert str(checked.dicts()[1]["CR"]) == "0.00"


def test_recheck_refuses_rows_that_were_never_checked() -> None:
    spec = TABLES["IMM"]
    bad = CheckedRows(spec, ([1], ["x" * 11], [None], [None], [None]))  # VC is 10 long
    with pytest.raises(InvalidInput, match="^IMM row 7, column VC: longer than 10"):
        recheck(bad, first_index=7)
    with pytest.raises(ValueError, match="do not fit"):
        recheck(CheckedRows(spec, ([1], ["03"])), first_index=0)


def test_a_wire_validator_is_not_built_for_a_proto_field_that_does_not_fit_its_column() -> None:
    """The closures skip per-value type checks because the proto field's type is checked once."""
    from rt_server.core.validate import _wire_validator

    spec = TABLES["HIS"]
    as_int = ColumnSpec("CO", "gr", ColumnKind.STRING, max_length=5)  # gr is an int32 field
    with pytest.raises(TypeError, match="does not fit"):
        _wire_validator(spec, as_int)


_PYTHON_DECIMALS = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True, places=None),
    st.decimals(min_value=-99999, max_value=99999, places=2, allow_nan=False),
    st.sampled_from(_PYTHON_DECIMAL_EDGES),
)


@st.composite
def _python_rows(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]]]:
    """Row dicts as an import or a SIS load gives them; decimals in every form."""
    spec = draw(st.sampled_from([s for s in TABLES.values() if any(
        c.kind is ColumnKind.DECIMAL for c in s.columns)]))  # fmt: skip
    rows = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        row: dict[str, Any] = {}
        for column in spec.columns:
            if draw(st.booleans()):
                if column.kind is ColumnKind.DECIMAL:
                    row[column.name] = draw(_PYTHON_DECIMALS)
                elif column.kind is ColumnKind.DATE:
                    row[column.name] = draw(st.dates())
                else:
                    row[column.name] = draw(_value(column))
        rows.append(row)
    return spec.code, rows


@settings(max_examples=300, deadline=None)
@given(table_rows=_python_rows())
def test_row_dict_checks_agree_with_the_row_by_row_reference(
    table_rows: tuple[str, list[dict[str, Any]]],
) -> None:
    """A Decimal already in normal form is kept, not quantized again: same values, same errors."""
    table, rows = table_rows
    indexes = range(len(rows))

    def reference() -> list[dict[str, Any]]:
        return [validate_row(table, r, index=i) for i, r in zip(indexes, rows, strict=True)]

    expected = _outcome(reference)
    new = _outcome(lambda: check_rows(table, rows, indexes).dicts())
    assert new == expected
    if not isinstance(new, str):
        assert repr(new) == repr(expected)  # 2.50, never 2.5; 0.00, never -0.00
        again = recheck(check_rows(table, rows, indexes), first_index=0).dicts()
        assert repr(again) == repr(expected)
        # The column path took them, every column, without the row-by-row fallback.
        spec = TABLES[table]
        refused = [
            column.name
            for column in spec.columns
            if validate._check_column(column, [r.get(column.name) for r in rows], from_wire=False)
            is None
        ]
        assert refused == []


_DECIMAL_COLUMNS = [
    (spec, column)
    for spec in TABLES.values()
    for column in spec.columns
    if column.kind is ColumnKind.DECIMAL
]


@pytest.mark.parametrize("text", _WIRE_DECIMAL_EDGES)
def test_every_edge_decimal_spelling_on_the_wire_agrees_with_the_reference(text: str) -> None:
    for spec, column in _DECIMAL_COLUMNS:
        batch = records_pb2.RecordBatch(table=spec.enum)
        getattr(batch, spec.batch_field).add(**{column.field: text})
        expected = _reference(batch, 4)
        got = _outcome(lambda b=batch: checked_batch(b, first_index=4))
        if isinstance(expected, str):
            assert got == expected, (spec.code, column.name)
        else:
            assert _spelled(got) == _columns(spec, expected), (spec.code, column.name)


@pytest.mark.parametrize("value", _PYTHON_DECIMAL_EDGES, ids=str)
def test_every_edge_decimal_value_in_a_row_dict_agrees_with_the_reference(value: Decimal) -> None:
    for spec, column in _DECIMAL_COLUMNS:
        row = {column.name: value}
        expected = _outcome(lambda s=spec, r=row: [validate_row(s, r, index=4)])
        got = _outcome(lambda s=spec, r=row: check_rows(s, [r], [4]))
        if isinstance(expected, str):
            assert got == expected, (spec.code, column.name)
        else:
            assert _spelled(got) == _columns(spec, expected), (spec.code, column.name)
            again = recheck(got, first_index=4)
            assert _spelled(again) == _columns(spec, expected), (spec.code, column.name)
