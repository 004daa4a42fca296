"""The fence around the hand-written protobuf encoder of the export (rt_server.store._wire).

The encoder writes wire bytes itself for the field types in ``FIELD_TYPES``.
These tests fail loudly when ``records.proto`` gains something it does not
handle (another field type, a repeated or nested field, a field without
presence, a row message that is not a repeated field of ``RecordBatch``), and
check, for every table, that its batches are exactly what protobuf's own
serializer makes of the same values, as either database driver returns them.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from protos.rt.v1 import records_pb2
from rt_server.core.tables import ALL_TABLES, TABLES, ColumnKind, ColumnSpec, normalize_decimal
from rt_server.store._wire import FIELD_TYPES, BatchBuilder

_BATCH = records_pb2.RecordBatch.DESCRIPTOR
_TYPE_NAMES = {
    value: name for name, value in vars(FieldDescriptor).items() if name.startswith("TYPE_")
}


def _row_messages() -> dict[str, Descriptor]:
    """Every row message of records.proto, by the RecordBatch field that carries it."""
    return {f.name: f.message_type for f in _BATCH.fields if f.type == FieldDescriptor.TYPE_MESSAGE}


def test_the_batch_holds_its_table_and_rows_only() -> None:
    """The encoder frames each row as a field of the batch; the batch sets ``table`` itself."""
    for field in _BATCH.fields:
        if field.name == "table":
            assert field.type == FieldDescriptor.TYPE_ENUM and field.number == 1
        else:
            assert field.type == FieldDescriptor.TYPE_MESSAGE, (
                f"RecordBatch.{field.name} is not a row field: teach rt_server/store/_wire.py"
            )
    rows = {d.full_name for d in _row_messages().values()}
    for name, message in records_pb2.DESCRIPTOR.message_types_by_name.items():
        if name.endswith("Row"):
            assert message.full_name in rows, f"{name} is not carried by RecordBatch"
    assert {TABLES[code].batch_field for code in ALL_TABLES} == set(_row_messages())


def test_every_record_field_is_one_the_encoder_writes() -> None:
    """Walk the descriptors: a new field type in records.proto must fail here, not in a transfer."""
    for batch_field, row in _row_messages().items():
        # Each row is framed by hand as a length-delimited field of the batch.
        batch_descriptor = _BATCH.fields_by_name[batch_field]
        assert batch_descriptor.is_repeated, f"RecordBatch.{batch_field} must be repeated"
        assert not row.nested_types and not row.enum_types, f"{row.name}: nested types"
        for field in row.fields:
            where = f"{row.name}.{field.name}"
            assert field.type in FIELD_TYPES, (
                f"{where} is {_TYPE_NAMES.get(field.type, field.type)}, which the hand-written "
                "encoder (rt_server/store/_wire.py) does not write: add it there and here"
            )
            assert not field.is_repeated, f"{where}: the encoder writes one value per column"
            # NULL leaves a field unset and "" / 0 are set: only explicit presence keeps both.
            assert field.has_presence, f'{where} must be `optional` (NULL is not "" or 0)'


def test_every_field_type_the_encoder_writes_is_exercised_below() -> None:
    used = {f.type for row in _row_messages().values() for f in row.fields}
    assert used == FIELD_TYPES


def test_every_table_maps_each_row_field_to_a_column() -> None:
    for code in ALL_TABLES:
        spec = TABLES[code]
        fields = [f.name for f in spec.row_class.DESCRIPTOR.fields]
        assert [c.field for c in spec.columns] == fields, code


# --- round trip against protobuf's serializer -------------------------------------

# Values as the drivers return them (type_coerce to NullType: no SQLAlchemy processing).
_STRINGS = ["", "a", "Zoë", "学生", "x" * 127, "y" * 128, "é" * 300]
_INTS = [0, 1, -1, 127, 128, 300, 2**31 - 1, -(2**31)]


def _driver_values(column: ColumnSpec) -> list[Any]:
    """Values of ``column`` as SQLite and PostgreSQL hand them back, NULL included."""
    if column.kind is ColumnKind.STRING:
        # Longer than the column allows too: the encoder takes what the database
        # holds (SQLite does not enforce VARCHAR lengths), and lengths from 128
        # bytes up take a two-byte varint.
        return [*_STRINGS, None]
    if column.kind is ColumnKind.INT:
        return [*_INTS, None]
    if column.kind is ColumnKind.BOOL:
        return [True, False, 1, 0, None]  # PostgreSQL: bool; SQLite: 0 / 1
    if column.kind is ColumnKind.DATE:
        return ["2024-02-29", dt.date(1999, 12, 31), "0001-01-01", None]
    assert column.kind is ColumnKind.DECIMAL and column.scale is not None
    quantum = Decimal(1).scaleb(-column.scale)
    exact = [Decimal(0), Decimal("1") + quantum, -Decimal("12") - quantum, Decimal("-0")]
    # SQLite keeps NUMERIC as a float, or an int when whole.
    return [*exact, 2.5, -0.0, 0.0, 7, -3, None]


def _wire_value(column: ColumnSpec, value: Any) -> Any:
    """What the field must hold for ``value``, worked out independently of the encoder."""
    if column.kind is ColumnKind.DATE:
        return value if isinstance(value, str) else value.isoformat()
    if column.kind is ColumnKind.BOOL:
        return bool(value)
    if column.kind is ColumnKind.DECIMAL:
        assert column.scale is not None
        number = value if isinstance(value, Decimal) else Decimal(repr(value))
        return format(normalize_decimal(number, column.scale), "f")
    return value


def _page(code: str, sqs: list[int]) -> list[tuple[Any, ...]]:
    """Rows of table ``code``: every column cycles through its values, offset per column."""
    spec = TABLES[code]
    values = [_driver_values(c) for c in spec.columns[1:]]
    return [(sq, *(v[(i + k) % len(v)] for k, v in enumerate(values))) for i, sq in enumerate(sqs)]


def _expected(code: str, page: list[tuple[Any, ...]]) -> records_pb2.RecordBatch:
    """The batch built field by field through protobuf's own API."""
    spec = TABLES[code]
    batch = records_pb2.RecordBatch(table=spec.enum)
    rows = getattr(batch, spec.batch_field)
    for raw in page:
        fields = {
            c.field: _wire_value(c, v)
            for c, v in zip(spec.columns, raw, strict=True)
            if v is not None
        }
        rows.append(spec.row_class(**fields))
    return batch


_SQ_PAGES: dict[str, Callable[[], list[int]]] = {
    "dense, across varint blocks": lambda: list(range(1, 400)),
    "sparse": lambda: [0, 5, 1_000, 100_000, 2**31 - 1],
    "one row": lambda: [7],
}


@pytest.mark.parametrize(("code", "sqs"), list(itertools.product(ALL_TABLES, _SQ_PAGES)))
def test_batches_serialize_exactly_as_protobufs_own(code: str, sqs: str) -> None:
    page = _page(code, _SQ_PAGES[sqs]())
    built = BatchBuilder(TABLES[code]).build(page)
    expected = _expected(code, page)
    assert built == expected
    assert built.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    )
    # And the bytes parse back to the same rows (nothing the parser would drop or merge).
    again = records_pb2.RecordBatch.FromString(built.SerializeToString())
    assert again == expected


def test_a_builder_is_reused_across_pages_with_its_memos() -> None:
    """One builder makes every batch of a table: memos carry over, and are trimmed."""
    for code in ALL_TABLES:
        builder = BatchBuilder(TABLES[code])
        for start in (1, 2_000, 5):
            page = _page(code, list(range(start, start + 1_100)))
            assert builder.build(page) == _expected(code, page)
