"""The hand-written protobuf encoder of the export: rows of a record table -> ``RecordBatch``.

A speed hack, fenced here: a batch is built as protobuf wire bytes that upb
parses once, because setting fields from Python, row by row, costs more than
reading the rows does (``rt_server.store.export`` reads the rows). It writes
only the field types in ``FIELD_TYPES``; ``tests/unit/district/test_wire_encoder.py``
fails when ``records.proto`` gains a field type outside them, and checks every
table's batches against protobuf's own serializer.

Values come as the database driver returns them (SQLite: a date as its ISO text,
a decimal as a float, a bool as 0/1; PostgreSQL: ``date``, ``Decimal``, ``bool``)
and are converted to their wire form here (``_TO_WIRE``).
"""

from __future__ import annotations

import decimal
import functools
import itertools
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from protos.rt.v1 import records_pb2
from rt_server.core.tables import TABLES, ColumnKind, ColumnSpec, TableSpec, normalize_decimal

__all__ = ["FIELD_TYPES", "BatchBuilder"]

# The field types of a record row that ``_field_encoder`` writes by hand.
FIELD_TYPES: Final = frozenset(
    {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_BOOL}
)


def _date_to_wire(column: ColumnSpec) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        # SQLite: "YYYY-MM-DD" as SQLAlchemy stored it; PostgreSQL: a date.
        return value if type(value) is str else str(value.isoformat())

    return convert


def _decimal_to_wire(column: ColumnSpec) -> Callable[[Any], str]:
    scale = column.scale
    assert scale is not None
    pattern = f"%.{scale}f"

    def convert(value: Any) -> str:
        if isinstance(value, decimal.Decimal):  # PostgreSQL: exact
            return format(normalize_decimal(value, scale), "f")
        # SQLite keeps NUMERIC as a float (or an int when whole); SQLAlchemy
        # reads it back as Decimal("%.{scale}f" % value): the same text here.
        text: str = pattern % value
        return text[1:] if text[0] == "-" and not text.strip("-0.") else text  # one zero: "0.00"

    return convert


def _bool_to_wire(column: ColumnSpec) -> Callable[[Any], bool]:
    return bool  # SQLite: 0 / 1


_TO_WIRE: Final[dict[ColumnKind, Callable[[ColumnSpec], Callable[[Any], Any]]]] = {
    ColumnKind.DATE: _date_to_wire,
    ColumnKind.DECIMAL: _decimal_to_wire,
    ColumnKind.BOOL: _bool_to_wire,
}

# --- building a batch ----------------------------------------------------------
#
# A batch is built as protobuf wire bytes that upb parses once: setting fields
# from Python, row by row, costs more than reading the rows does. Each column
# maps a database value to its encoded field (tag and value) through a memo,
# so Python code runs once per distinct value and the work per row is C loops
# (map, zip, join). upb still decides what a field holds: a value the fast
# paths below do not cover is encoded by upb itself, with its own checks and
# errors (an int out of int32 range, a float where an int belongs), and the
# parse checks the bytes again (UTF-8, varints). The batch is an ordinary
# message, so it serializes exactly as one built field by field.

_WIRE_VARINT: Final = 0
_WIRE_LEN: Final = 2
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_UINT64: Final = 2**64 - 1
# A column's memo is emptied after a batch once it holds more than this many
# values, so memory stays bounded however many distinct values a table has.
_MEMO_LIMIT: Final = 1024


def _varint(value: int) -> bytes:
    """``value`` (0 <= value < 2**64) as a base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field_encoder(row_class: type[Message], column: ColumnSpec) -> Callable[[Any], bytes]:
    """A database value of ``column`` (not NULL) -> the encoded field of the row."""
    field = row_class.DESCRIPTOR.fields_by_name[column.field]
    to_wire = _TO_WIRE[column.kind](column) if column.kind in _TO_WIRE else None

    def by_upb(value: Any) -> bytes:
        return row_class(**{field.name: value}).SerializeToString()

    if field.type == FieldDescriptor.TYPE_STRING:
        tag = _varint(field.number << 3 | _WIRE_LEN)
        short = [tag + bytes((n,)) for n in range(0x80)]  # tag and a one-byte length

        def encode_text(value: Any) -> bytes:
            if to_wire is not None:
                value = to_wire(value)
            if type(value) is not str:
                return by_upb(value)  # bytes are taken if UTF-8, anything else refused
            try:
                data = value.encode()
            except UnicodeEncodeError:  # a lone surrogate
                return by_upb(value)
            size = len(data)
            return (short[size] if size < 0x80 else tag + _varint(size)) + data

        return encode_text

    # tables.py allows no other wire types. A memoised int also answers for an
    # equal float, which the drivers never return for an INTEGER column (SQLite
    # stores a whole REAL there as an integer, PostgreSQL's integer is an int).
    assert field.type in FIELD_TYPES - {FieldDescriptor.TYPE_STRING}
    tag = _varint(field.number << 3 | _WIRE_VARINT)
    wire_type = int if field.type == FieldDescriptor.TYPE_INT32 else bool

    def encode_number(value: Any) -> bytes:
        if to_wire is not None:
            value = to_wire(value)
        if type(value) is wire_type and _INT32_MIN <= value <= _INT32_MAX:
            return tag + _varint(value & _UINT64)  # a negative int32 takes ten bytes
        return by_upb(value)

    return encode_number


class _Memo(dict[Any, bytes]):
    """``encode`` memoised: value -> bytes, computed on first use; NULL -> no bytes."""

    __slots__ = ("_encode",)

    def __init__(self, encode: Callable[[Any], bytes]) -> None:
        super().__init__()
        self._encode = encode
        self[None] = b""  # NULL leaves the field unset; "" and 0 are set

    def __missing__(self, value: Any) -> bytes:
        encoded = self[value] = self._encode(value)
        return encoded

    def trim(self) -> None:
        """Forget the values memoised if there are more than ``_MEMO_LIMIT``."""
        if len(self) > _MEMO_LIMIT:
            self.clear()
            self[None] = b""


class _SqFields:
    """The encoded ``sq`` fields of a page.

    SQ numbers rows: in a page they are distinct, ascending and mostly
    consecutive, so a memo would only miss. The varints of 128 numbers that
    share their high bits differ in the first byte only, so the fields of such
    a block are made by one C loop, and a dense page is an index into blocks.
    """

    def __init__(self, tag: bytes, memo: _Memo) -> None:
        self._first_block, self._low_bytes = _sq_blocks(tag)
        self._memo = memo  # for a sparse page, and for values that are not int32

    def encode(self, sqs: Sequence[Any]) -> list[bytes]:
        first, last = sqs[0], sqs[-1]
        if (
            type(first) is int
            and type(last) is int
            and 0 <= first <= last <= _INT32_MAX
            and last - first < 4 * len(sqs)
        ):
            fields: list[bytes] = []
            for high in range(first >> 7, (last >> 7) + 1):
                if high:
                    fields += map(operator.add, self._low_bytes, itertools.repeat(_varint(high)))
                else:
                    fields += self._first_block
            offsets = map(operator.sub, sqs, itertools.repeat(first >> 7 << 7))
            try:
                # ORDER BY SQ puts every value between first and last; a REAL
                # among them (SQLite) is refused here, then by upb below.
                return list(map(fields.__getitem__, offsets))
            except TypeError:
                pass
        return list(map(self._memo.__getitem__, sqs))


@functools.cache
def _table_encoders(code: str) -> tuple[list[Callable[[Any], bytes]], bytes, bytes]:
    """(each column's encoder, the ``sq`` field's tag, the batch's row tag) of one table.

    Built once per table (a small transfer builds eight batches; making the
    encoders would cost more than using them).
    """
    spec = TABLES[code]
    encoders = [_field_encoder(spec.row_class, c) for c in spec.columns]
    sq = spec.row_class.DESCRIPTOR.fields_by_name[spec.columns[0].field]
    # A row is a length-delimited field of the batch: tag, length, row bytes.
    field = records_pb2.RecordBatch.DESCRIPTOR.fields_by_name[spec.batch_field]
    return encoders, _varint(sq.number << 3 | _WIRE_VARINT), _varint(field.number << 3 | _WIRE_LEN)


@functools.cache
def _sq_blocks(tag: bytes) -> tuple[list[bytes], list[bytes]]:
    """The fields of SQ 0..127 (one-byte varints), and the first bytes of longer ones."""
    return (
        [tag + bytes((n,)) for n in range(0x80)],
        [tag + bytes((n | 0x80,)) for n in range(0x80)],
    )


class BatchBuilder:
    """One table's ``RecordBatch`` messages from raw rows (``spec.columns`` order)."""

    def __init__(self, spec: TableSpec) -> None:
        self._table = spec.enum
        encoders, sq_tag, row_tag = _table_encoders(spec.code)
        self._memos = [_Memo(encode) for encode in encoders]
        self._sq = _SqFields(sq_tag, self._memos[0])
        self._prefixes = _Memo(lambda length: row_tag + _varint(length))

    def build(self, page: Sequence[Sequence[Any]]) -> records_pb2.RecordBatch:
        sqs, *columns = zip(*page, strict=True)
        fields: list[Iterable[bytes]] = [self._sq.encode(sqs)]
        for memo, values in zip(self._memos[1:], columns, strict=True):
            if values[0] is not None or values.count(None) < len(values):
                fields.append(map(memo.__getitem__, values))  # all NULL: no bytes
        rows = list(map(b"".join, zip(*fields, strict=True)))
        prefixes = map(self._prefixes.__getitem__, map(len, rows))
        framed = itertools.chain.from_iterable(zip(prefixes, rows, strict=True))
        batch = records_pb2.RecordBatch(table=self._table)
        batch.MergeFromString(b"".join(framed))
        for memo in self._memos:
            memo.trim()
        return batch
