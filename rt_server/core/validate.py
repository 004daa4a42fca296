"""Bounds on record rows that come from outside: a peer's transfer or a SIS load.

The column types of ``rt_server.db.schema`` are the bounds: string lengths,
decimal precision and scale, 32-bit integers, real calendar dates. Errors name
the table, row index and column, never the value, which may be student data.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping
from typing import Any, Final

from protos.rt.v1 import records_pb2
from rt_client.errors import InvalidInput
from rt_server.core.tables import (
    TABLES,
    ColumnKind,
    ColumnSpec,
    TableRef,
    TableSpec,
    Unconvertible,
    normalize_decimal,
    row_from_proto,
    row_problem,
    table_spec,
)

__all__ = ["INT32_MAX", "INT32_MIN", "MAX_ROWS_PER_BATCH", "validate_batch", "validate_row"]

# One batch is decrypted, parsed and held in memory at once; this bounds that.
MAX_ROWS_PER_BATCH: Final = 5000
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1


def _check_value(column: ColumnSpec, value: Any) -> Any:
    """``value`` checked against ``column`` and normalised; raises ``Unconvertible``."""
    kind = column.kind
    if kind is ColumnKind.STRING:
        if not isinstance(value, str):
            raise Unconvertible("must be text")
        assert column.max_length is not None
        if len(value) > column.max_length:
            raise Unconvertible(f"longer than {column.max_length} characters")
        # PostgreSQL cannot store NUL in text; SQLite would, and the two would differ.
        if "\x00" in value:
            raise Unconvertible("contains a NUL character")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise Unconvertible("is not valid Unicode text") from None
        return value
    if kind is ColumnKind.INT:
        if not isinstance(value, int) or isinstance(value, bool):
            raise Unconvertible("must be a whole number")
        if not INT32_MIN <= value <= INT32_MAX:
            raise Unconvertible("is out of range for a 32-bit integer")
        return value
    if kind is ColumnKind.BOOL:
        if not isinstance(value, bool):
            raise Unconvertible("must be true or false")
        return value
    if kind is ColumnKind.DATE:
        if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
            raise Unconvertible("must be a date")
        return value
    # DECIMAL
    assert column.precision is not None and column.scale is not None
    if not isinstance(value, decimal.Decimal):
        raise Unconvertible("must be a decimal number")
    value = normalize_decimal(value, column.scale)
    if abs(value) >= decimal.Decimal(10) ** (column.precision - column.scale):
        raise Unconvertible(
            f"has more than {column.precision - column.scale} digits before the decimal point"
        )
    return value


def validate_row(
    table: TableRef | TableSpec, row: Mapping[str, Any], *, index: int | None = None
) -> dict[str, Any]:
    """A checked, normalised copy of the row dict ``row`` of ``table``.

    The copy has every column of the table (missing ones ``None``). Raises
    ``InvalidInput`` naming table, ``index`` (if given) and column when a key
    is not a column of the table or a value does not fit its column.
    """
    spec = table_spec(table)
    unknown = row.keys() - spec.by_name.keys()
    if unknown:
        name = min(unknown) if all(isinstance(k, str) for k in unknown) else None
        raise InvalidInput(row_problem(spec, name, "no such column in this table", index))
    checked: dict[str, Any] = {}
    for column in spec.columns:
        value = row.get(column.name)
        if value is not None:
            try:
                value = _check_value(column, value)
            except Unconvertible as exc:
                raise InvalidInput(row_problem(spec, column.name, str(exc), index)) from None
        checked[column.name] = value
    return checked


def validate_batch(
    batch: records_pb2.RecordBatch, *, first_index: int = 0
) -> tuple[str, list[dict[str, Any]]]:
    """The table code and checked row dicts of one ``RecordBatch`` from outside.

    The batch must name a known table, hold rows in exactly that table's field
    and no other, and hold at most ``MAX_ROWS_PER_BATCH`` rows. Row indexes in
    error messages start at ``first_index`` (pass the running count of rows
    of this table seen so far, so they match the review's indexes). Raises
    ``InvalidInput``; nothing is returned for a batch with any bad row.
    """
    spec = _BY_ENUM_VALUE.get(batch.table)
    if spec is None:
        raise InvalidInput("record batch names no known table")
    populated = [s.code for s in TABLES.values() if len(getattr(batch, s.batch_field))]
    if not populated:
        raise InvalidInput(f"{spec.code}: record batch holds no rows")
    if populated != [spec.code]:
        raise InvalidInput(
            f"{spec.code}: record batch holds rows of "
            + ", ".join(populated)
            + "; a batch holds rows of the one table it names"
        )
    messages = getattr(batch, spec.batch_field)
    if len(messages) > MAX_ROWS_PER_BATCH:
        raise InvalidInput(
            f"{spec.code}: record batch holds {len(messages)} rows; "
            f"at most {MAX_ROWS_PER_BATCH} are allowed"
        )
    rows: list[dict[str, Any]] = []
    for offset, message in enumerate(messages):
        index = first_index + offset
        rows.append(validate_row(spec, row_from_proto(spec, message, index=index), index=index))
    return spec.code, rows


_BY_ENUM_VALUE: Final[dict[int, TableSpec]] = {s.enum: s for s in TABLES.values()}
