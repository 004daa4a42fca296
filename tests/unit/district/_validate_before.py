"""The column validation as it was before the per-table wire validators: the reference
``test_validate_columns`` holds the new one to. Not used by the product."""

# ruff: noqa
# mypy: ignore-errors
from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter, methodcaller
from typing import Any, Final

from google.protobuf.timestamp_pb2 import Timestamp

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
    parse_date,
    parse_decimal,
    row_from_proto,
    row_problem,
    table_spec,
)

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "MAX_PEER_MESSAGE_AGE",
    "MAX_REQUEST_LIFETIME",
    "MAX_ROWS_PER_BATCH",
    "PEER_CLOCK_SKEW",
    "CheckedRows",
    "check_batch",
    "check_peer_time",
    "check_request_expiry",
    "check_rows",
    "checked_batch",
    "datetime_of",
    "peer_time",
    "recheck",
    "validate_batch",
    "validate_row",
]

# One batch is decrypted, parsed and held in memory at once; this bounds that.
MAX_ROWS_PER_BATCH: Final = 5000
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1

# How far ahead of our clock a peer's may run: districts keep their clocks by
# NTP; minutes, not hours, of drift is what a misconfigured server shows.
PEER_CLOCK_SKEW: Final = dt.timedelta(minutes=5)
# How old a peer's message may be when it first reaches us: a sender's outbox
# retries an undelivered message for ``retry_horizon_seconds`` (7 days by
# default, ``rt_client.config``) before giving up, so a request queued at B may
# reach A days later; 30 days leaves room for a longer horizon.
MAX_PEER_MESSAGE_AGE: Final = dt.timedelta(days=30)
# How long after it was created a request may expire: ours expire after
# ``Limits.request_ttl_days`` (30); a year leaves room for another district's policy.
MAX_REQUEST_LIFETIME: Final = dt.timedelta(days=365)


# --- times a peer sends -------------------------------------------------------------


def check_peer_time(
    what: str, value: dt.datetime, now: dt.datetime, *, not_before: dt.datetime | None = None
) -> None:
    """Refuse a time in a peer's message that no honest peer would have signed.

    ``value`` may be at most ``PEER_CLOCK_SKEW`` after ``now``. It may be at
    most ``MAX_PEER_MESSAGE_AGE`` before ``now`` -- unless ``not_before`` is
    given: the time of what the message answers (the request a decision,
    message, notice or transfer is for; the transfer a receipt is for). Then it
    may be no earlier than ``not_before`` less ``PEER_CLOCK_SKEW``: an answer
    can arrive any time later (a registrar may retry a failed send weeks
    after), but it cannot predate what it answers. Both limits are inclusive.

    Raises ``InvalidInput`` naming ``what`` (e.g. "the decision's decided-at").
    """
    if value > now + PEER_CLOCK_SKEW:
        raise InvalidInput(f"{what} is in the future (more than the allowed clock skew)")
    if not_before is None:
        if value < now - MAX_PEER_MESSAGE_AGE:
            days = MAX_PEER_MESSAGE_AGE.days
            raise InvalidInput(f"{what} is more than {days} days in the past")
    elif value < not_before - PEER_CLOCK_SKEW:
        raise InvalidInput(f"{what} is before the time of what it answers")


def peer_time(
    what: str, ts: Timestamp, now: dt.datetime, *, not_before: dt.datetime | None = None
) -> dt.datetime:
    """A timestamp from a peer's message, as an aware datetime, checked by ``check_peer_time``.

    Raises ``InvalidInput`` naming ``what`` when it is unset (the epoch), out
    of a datetime's range, or outside ``check_peer_time``'s bounds.
    """
    if ts.seconds == 0 and ts.nanos == 0:
        raise InvalidInput(f"{what} is missing")
    value = datetime_of(what, ts)
    check_peer_time(what, value, now, not_before=not_before)
    return value


def datetime_of(what: str, ts: Timestamp) -> dt.datetime:
    """``ts`` as an aware datetime, unchecked (``peer_time`` checks).

    Raises ``InvalidInput`` naming ``what`` for a time outside what a datetime
    can hold (protobuf would raise ``ValueError``: a crash, not a refusal).
    """
    try:
        return ts.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(f"{what} is out of range") from None


def check_request_expiry(created: dt.datetime, expires: dt.datetime, now: dt.datetime) -> None:
    """Refuse a peer's request that has expired, expires before it was created, or
    expires more than ``MAX_REQUEST_LIFETIME`` after it was created (inclusive).

    ``created`` has passed ``check_peer_time``. Raises ``InvalidInput``.
    """
    if expires <= created:
        raise InvalidInput("the request expires before it was created")
    if expires <= now:
        raise InvalidInput("the request has expired")
    if expires > created + MAX_REQUEST_LIFETIME:
        days = MAX_REQUEST_LIFETIME.days
        raise InvalidInput(f"the request expires more than {days} days after it was created")


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
    checked = _check_batch(batch, first_index)
    return checked.spec.code, checked.dicts()


def check_batch(batch: records_pb2.RecordBatch, *, first_index: int = 0) -> tuple[str, int]:
    """``validate_batch`` without row dicts: (table code, rows). Same checks, same errors."""
    checked = _check_batch(batch, first_index)
    return checked.spec.code, len(checked)


def checked_batch(batch: records_pb2.RecordBatch, *, first_index: int = 0) -> CheckedRows:
    """``validate_batch``'s rows as columns (what an import writes). Same checks, same errors."""
    return _check_batch(batch, first_index)


def recheck(rows: CheckedRows, *, first_index: int) -> CheckedRows:
    """Check rows again, column by column, as ``check_rows`` would (the importer's own gate).

    Raises ``InvalidInput`` naming the first bad row, counting from ``first_index``.
    """
    spec = rows.spec
    if len(rows.columns) != len(spec.columns) or len({len(c) for c in rows.columns}) != 1:
        raise ValueError(f"{spec.code}: the columns do not fit the table")  # a bug, not bad input
    columns = []
    for column, values in zip(spec.columns, rows.columns, strict=True):
        checked = _check_column(column, values, from_wire=False)
        if checked is None:
            return check_rows(spec, rows.dicts(), range(first_index, first_index + len(rows)))
        columns.append(checked)
    return CheckedRows(spec, tuple(columns))


def check_rows(
    table: TableRef | TableSpec, rows: Sequence[Mapping[str, Any]], indexes: Sequence[int]
) -> CheckedRows:
    """``validate_row`` for many row dicts of one table at once, as columns.

    ``indexes[i]`` is the index of ``rows[i]`` in error messages. Raises
    ``InvalidInput`` for the first bad row, exactly as ``validate_row`` would.
    """
    spec = table_spec(table)
    names = _NAMES[spec.code]
    if all(map(names.issuperset, rows)):
        columns: list[list[Any]] = []
        for column, get in zip(spec.columns, _DICT_GETTERS[spec.code], strict=True):
            values = _check_column(column, list(map(get, rows)), from_wire=False)
            if values is None:
                break
            columns.append(values)
        else:
            return CheckedRows(spec, tuple(columns))
    # Some row is wrong: the row-by-row path names it (and is the reference).
    return CheckedRows.from_dicts(
        spec, [validate_row(spec, row, index=i) for row, i in zip(rows, indexes, strict=True)]
    )


@dataclass(frozen=True)
class CheckedRows:
    """Rows of one table that passed validation, held column by column (``spec.columns`` order)."""

    spec: TableSpec
    columns: tuple[list[Any], ...]

    def __len__(self) -> int:
        return len(self.columns[0])

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as row dicts (every column of the table)."""
        names = self.spec.column_names
        return [dict(zip(names, values, strict=True)) for values in zip(*self.columns, strict=True)]

    @classmethod
    def from_dicts(cls, spec: TableSpec, rows: Sequence[Mapping[str, Any]]) -> CheckedRows:
        return cls(spec, tuple([row[name] for row in rows] for name in spec.column_names))


def _check_batch(batch: records_pb2.RecordBatch, first_index: int) -> CheckedRows:
    spec, messages = _batch_rows(batch)
    return _check_messages(spec, messages, first_index)


def _batch_rows(batch: records_pb2.RecordBatch) -> tuple[TableSpec, Sequence[Any]]:
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
    return spec, messages


def _check_messages(spec: TableSpec, messages: Sequence[Any], first_index: int) -> CheckedRows:
    # One Python object per row, made once (the container would make one per access).
    messages = list(messages)
    columns: list[list[Any]] = []
    for column, (get, has) in zip(spec.columns, _MESSAGE_READERS[spec.code], strict=True):
        values = list(map(get, messages))
        # An unset field and one set to its default ("", 0, false) read the
        # same; presence is asked only where the value read is a default.
        if not all(values):
            values = [v if v or has(m) else None for v, m in zip(values, messages, strict=True)]
        checked = _check_column(column, values, from_wire=True)
        if checked is None:
            break
        columns.append(checked)
    else:
        return CheckedRows(spec, tuple(columns))
    # Some row is wrong: the row-by-row path names it (and is the reference).
    rows = []
    for offset, message in enumerate(messages):
        index = first_index + offset
        rows.append(validate_row(spec, row_from_proto(spec, message, index=index), index=index))
    return CheckedRows.from_dicts(spec, rows)


def _is_not_none(value: Any) -> bool:
    return value is not None


def _check_column(column: ColumnSpec, values: list[Any], *, from_wire: bool) -> list[Any] | None:
    """``values`` (``None``: NULL) checked and normalised as a whole; ``None`` if any one fails.

    Must accept exactly what ``_check_value`` (after ``row_from_proto``, when
    ``from_wire``) accepts, and normalise the same way; it may refuse more
    (a ``str`` subclass, say): the row-by-row path then decides.
    """
    present = values if None not in values else list(filter(_is_not_none, values))
    if not present:
        return values
    kinds = set(map(type, present))
    kind = column.kind
    try:
        if kind is ColumnKind.STRING:
            if kinds != {str}:
                return None
            assert column.max_length is not None
            if max(map(len, present)) > column.max_length:
                return None
            joined = "".join(present)
            if "\x00" in joined:
                return None
            if not joined.isascii():
                joined.encode("utf-8")  # refuses lone surrogates
            return values
        if kind is ColumnKind.INT:
            if kinds != {int} or min(present) < INT32_MIN or max(present) > INT32_MAX:
                return None
            return values
        if kind is ColumnKind.BOOL:
            return values if kinds == {bool} else None
        # Dates and decimals repeat within a batch: each distinct one is checked once.
        # On the wire both are text; in a row dict, exactly date / Decimal (a
        # subclass such as datetime goes the row-by-row way).
        if kinds != ({str} if from_wire else _PYTHON_TYPES[kind]):
            return None
        convert = _WIRE_CONVERTERS[kind] if from_wire else _PYTHON_CONVERTERS[kind]
        distinct = {value: convert(column, value) for value in set(present)}
        return list(map(distinct.get, values))
    except (Unconvertible, UnicodeEncodeError, TypeError, ValueError, ArithmeticError):
        return None


def _date_from_wire(column: ColumnSpec, text: str) -> dt.date:
    return _check_value(column, parse_date(text))  # type: ignore[no-any-return]


def _decimal_from_wire(column: ColumnSpec, text: str) -> decimal.Decimal:
    assert column.scale is not None
    return _check_value(column, parse_decimal(text, column.scale))  # type: ignore[no-any-return]


_WIRE_CONVERTERS: Final[dict[ColumnKind, Callable[[ColumnSpec, Any], Any]]] = {
    ColumnKind.DATE: _date_from_wire,
    ColumnKind.DECIMAL: _decimal_from_wire,
}
_PYTHON_CONVERTERS: Final[dict[ColumnKind, Callable[[ColumnSpec, Any], Any]]] = {
    ColumnKind.DATE: _check_value,
    ColumnKind.DECIMAL: _check_value,
}
_PYTHON_TYPES: Final[dict[ColumnKind, set[type]]] = {
    ColumnKind.DATE: {dt.date},
    ColumnKind.DECIMAL: {decimal.Decimal},
}

_BY_ENUM_VALUE: Final[dict[int, TableSpec]] = {s.enum: s for s in TABLES.values()}
_NAMES: Final[dict[str, frozenset[str]]] = {
    code: frozenset(spec.column_names) for code, spec in TABLES.items()
}
_DICT_GETTERS: Final[dict[str, tuple[Callable[[Mapping[str, Any]], Any], ...]]] = {
    code: tuple(methodcaller("get", c.name) for c in spec.columns) for code, spec in TABLES.items()
}
_Reader = tuple[Callable[[Any], Any], Callable[[Any], bool]]  # (field value, field is set)
_MESSAGE_READERS: Final[dict[str, tuple[_Reader, ...]]] = {
    code: tuple((attrgetter(c.field), methodcaller("HasField", c.field)) for c in spec.columns)
    for code, spec in TABLES.items()
}
