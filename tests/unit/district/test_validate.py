"""Bounds on rows from outside: every refusal names where, never what."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest

from protos.rt.v1 import common_pb2, records_pb2
from rt_client.errors import InvalidInput
from rt_server.core.validate import MAX_ROWS_PER_BATCH, validate_batch, validate_row
from scripts import samples


def _batch(table: int, **rows: list[object]) -> records_pb2.RecordBatch:
    batch = records_pb2.RecordBatch(table=table)  # type: ignore[arg-type]
    for field, values in rows.items():
        getattr(batch, field).extend(values)
    return batch


def test_sample_records_are_valid() -> None:
    rng = random.Random(1)
    for batch in samples.sample_batches(rng):
        code, rows = validate_batch(batch)
        assert rows and code == common_pb2.TableCode.Name(batch.table)


def test_valid_batch_gives_table_and_row_dicts() -> None:
    code, rows = validate_batch(
        _batch(common_pb2.IMM, imm=[records_pb2.ImmRow(vc="03", dn=1, dt="2011-05-01")])
    )
    assert code == "IMM"
    assert rows == [{"SQ": None, "VC": "03", "DN": 1, "DT": dt.date(2011, 5, 1), "SRC": None}]


def test_invalid_date_is_refused() -> None:
    batch = _batch(
        common_pb2.IMM,
        imm=[records_pb2.ImmRow(dt="2025-02-28"), records_pb2.ImmRow(dt="2025-02-30")],
    )
    with pytest.raises(InvalidInput) as err:
        validate_batch(batch)
    assert str(err.value) == "IMM row 1, column DT: not a real calendar date"


def test_row_index_counts_from_first_index() -> None:
    batch = _batch(common_pb2.IMM, imm=[records_pb2.ImmRow(dt="2025-02-30")])
    with pytest.raises(InvalidInput, match=r"^IMM row 5000, column DT"):
        validate_batch(batch, first_index=5000)


def test_over_long_string_is_refused_and_the_limit_is_in_characters() -> None:
    ok = "ñ" * 60  # 120 bytes of UTF-8, 60 characters: fits String(60)
    validate_batch(_batch(common_pb2.HIS, his=[records_pb2.HisRow(co=ok)]))
    secret = "Confidential-Name-" + "x" * 60
    with pytest.raises(InvalidInput) as err:
        validate_batch(_batch(common_pb2.HIS, his=[records_pb2.HisRow(co=secret)]))
    assert str(err.value) == "HIS row 0, column CO: longer than 60 characters"
    assert "Confidential" not in str(err.value)


def test_nul_character_is_refused() -> None:
    with pytest.raises(InvalidInput, match="column CO: contains a NUL character"):
        validate_batch(_batch(common_pb2.HIS, his=[records_pb2.HisRow(co="a\x00b")]))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("10000.00", "more than 4 digits before the decimal point"),
        ("2.555", "more than 2 decimal places"),
        ("two", "not a decimal number"),
        ("", "not a decimal number"),
    ],
)
def test_decimals_must_parse_and_fit(value: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=f"HIS row 0, column CR: .*{problem}"):
        validate_batch(_batch(common_pb2.HIS, his=[records_pb2.HisRow(cr=value)]))
    validate_batch(_batch(common_pb2.HIS, his=[records_pb2.HisRow(cr="9999.99")]))


def test_empty_date_is_not_null_and_is_refused() -> None:
    with pytest.raises(InvalidInput, match="column TD: not a date"):
        validate_batch(_batch(common_pb2.PFT, pft=[records_pb2.PftRow(td="")]))


def test_batch_with_two_tables_populated_is_refused() -> None:
    batch = _batch(
        common_pb2.HIS, his=[records_pb2.HisRow(cn="1")], tst=[records_pb2.TstRow(id="X")]
    )
    with pytest.raises(InvalidInput, match="holds rows of TST, HIS"):
        validate_batch(batch)


def test_batch_whose_rows_are_not_of_its_table_is_refused() -> None:
    with pytest.raises(InvalidInput, match="^HIS: record batch holds rows of TST"):
        validate_batch(_batch(common_pb2.HIS, tst=[records_pb2.TstRow(id="X")]))


def test_batch_without_rows_or_table_is_refused() -> None:
    with pytest.raises(InvalidInput, match="holds no rows"):
        validate_batch(_batch(common_pb2.HIS))
    with pytest.raises(InvalidInput, match="names no known table"):
        validate_batch(_batch(common_pb2.TABLE_CODE_UNSPECIFIED, his=[records_pb2.HisRow()]))
    with pytest.raises(InvalidInput, match="names no known table"):
        validate_batch(_batch(42, his=[records_pb2.HisRow()]))


def test_batch_over_the_row_limit_is_refused() -> None:
    rows = [records_pb2.ImmRow(vc="03")] * MAX_ROWS_PER_BATCH
    assert len(validate_batch(_batch(common_pb2.IMM, imm=rows))[1]) == MAX_ROWS_PER_BATCH
    with pytest.raises(InvalidInput, match=f"{MAX_ROWS_PER_BATCH + 1} rows; at most"):
        validate_batch(_batch(common_pb2.IMM, imm=rows + [records_pb2.ImmRow()]))


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("CO", 5, "must be text"),
        ("GR", "9", "must be a whole number"),
        ("GR", True, "must be a whole number"),
        ("GR", 2**31, "out of range for a 32-bit integer"),
        ("CR", 2.5, "must be a decimal number"),
        ("CR", Decimal("NaN"), "not a finite decimal number"),
        ("DC", "2024-01-01", "must be a date"),
        ("DC", dt.datetime(2024, 1, 1), "must be a date"),
        ("CO", "\ud800", "not valid Unicode text"),
        ("PID", "S1", "no such column"),
    ],
)
def test_validate_row_checks_python_types(column: str, value: object, problem: str) -> None:
    with pytest.raises(InvalidInput, match=f"HIS row 3, column {column}: .*{problem}"):
        validate_row("HIS", {column: value}, index=3)


def test_validate_row_fills_missing_columns_and_normalises() -> None:
    row = validate_row("HIS", {"CR": Decimal("2.5"), "CO": ""})
    assert row["CR"] == Decimal("2.50") and str(row["CR"]) == "2.50"
    assert row["CO"] == "" and row["MK"] is None
    assert len(row) == 16
