"""The live link to the SIS database: a source that reads it, a sink that writes imports back.

``LiveSource`` (the prior district, ``sis_database_url``) reads a student's
rows straight from the SIS's Aeries-layout tables at approval time, so no
copy needs syncing. The SIS's own column types may differ from ours (a
dialect's DATETIME for a date, a padded CHAR, a number for a year): each
value is brought to its column's kind here, then the rows are checked as
received rows are (``validate.check_rows``) before they are sent.

``WriteBack`` (the new district, ``sis_write_back = true``) imports into our
tables as always -- the import ledger there makes an import happen once --
then writes the rows that import wrote into the SIS's tables in one SIS
transaction, before ours commits: if the SIS refuses, our import rolls back
too. Should ours fail after the SIS committed, importing again finds the
rows already in the SIS and leaves them (``store.sis_live``).
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable, Iterator
from typing import Any, Final

from sqlalchemy import Connection

from protos.rt.v1 import records_pb2
from rt_client.errors import InvalidInput
from rt_server.core.tables import TABLES, ColumnKind, ColumnSpec, TableRef, row_to_proto, table_set
from rt_server.core.validate import CheckedRows, check_rows
from rt_server.sis.seam import OwnTables
from rt_server.store import importer, sis_export
from rt_server.store.sis_live import SisDatabase, WriteBackCounts, open_sis

__all__ = ["LiveSource", "WriteBack", "open_sis", "sis_value"]

BATCH_ROWS: Final = 1000
_TRUE: Final = frozenset({"Y", "T", "1", "TRUE", "YES"})
_FALSE: Final = frozenset({"N", "F", "0", "FALSE", "NO", ""})


def sis_value(column: ColumnSpec, value: Any) -> Any:
    """A value as the SIS's driver gave it, as our column kind holds it (unchecked).

    Raises ``InvalidInput`` naming the column (never the value) when it cannot be.
    """
    if value is None:
        return None
    kind = column.kind
    try:
        if kind is ColumnKind.STRING:
            text = str(value) if not isinstance(value, str) else value
            return text.rstrip(" ")  # CHAR(n) columns come padded
        if kind is ColumnKind.INT:
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, int):
                return value
            number = decimal.Decimal(str(value).strip())
            if number != number.to_integral_value():
                raise ValueError
            return int(number)
        if kind is ColumnKind.BOOL:
            if isinstance(value, bool | int):
                return bool(value)
            text = str(value).strip().upper()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError
        if kind is ColumnKind.DATE:
            if isinstance(value, dt.datetime):
                return value.date()
            if isinstance(value, dt.date):
                return value
            return dt.date.fromisoformat(str(value).strip()[:10])
        number = decimal.Decimal(str(value).strip())
        assert column.scale is not None
        return number.quantize(decimal.Decimal(1).scaleb(-column.scale))
    except (ValueError, ArithmeticError):
        raise InvalidInput(f"column {column.name}: not a {kind.value}") from None


def _row(code: str, stored: tuple[Any, ...]) -> dict[str, Any]:
    spec = TABLES[code]
    out: dict[str, Any] = {}
    for column, value in zip(spec.columns, stored, strict=True):
        try:
            out[column.name] = sis_value(column, value)
        except InvalidInput as exc:
            raise InvalidInput(f"the SIS's {code} table: {exc}") from None
    return out


class LiveSource:
    """Rows read straight from the SIS database (``sis_database_url``)."""

    def __init__(self, sis: SisDatabase) -> None:
        self._sis = sis

    def dispose(self) -> None:
        self._sis.dispose()

    def batches(self, pid: str, tables: Iterable[TableRef]) -> Iterator[records_pb2.RecordBatch]:
        for code in table_set(tables):
            rows: list[dict[str, Any]] = []
            for stored in self._sis.read_rows(code, pid):
                rows.append(_row(code, tuple(stored)))
                if len(rows) == BATCH_ROWS:
                    yield self._batch(code, rows)
                    rows = []
            if rows:
                yield self._batch(code, rows)

    @staticmethod
    def _batch(code: str, rows: list[dict[str, Any]]) -> records_pb2.RecordBatch:
        spec = TABLES[code]
        try:
            # Checked as received rows are: the receiver would refuse them otherwise.
            checked = check_rows(spec, rows, [row["SQ"] for row in rows])
        except InvalidInput as exc:
            raise InvalidInput(f"the SIS's row cannot be sent ({exc}; row = its SQ)") from None
        batch = records_pb2.RecordBatch(table=spec.enum)
        getattr(batch, spec.batch_field).extend(row_to_proto(spec, r) for r in checked.dicts())
        return batch


class WriteBack:
    """Imports go into our tables and, in the same import, into the SIS's tables."""

    def __init__(self, own: OwnTables, sis: SisDatabase) -> None:
        self._own = own
        self._sis = sis
        self.last: WriteBackCounts | None = None

    def dispose(self) -> None:
        self._sis.dispose()

    def import_batches(
        self,
        conn: Connection,
        transfer_id: str,
        pid: str,
        batches: Iterable[tuple[int, CheckedRows]],
        accept_conflicts: importer.AcceptConflicts,
        *,
        keep_both: importer.AcceptConflicts,
        actor: str,
        now: dt.datetime,
    ) -> importer.ImportResult:
        result = self._own.import_batches(
            conn,
            transfer_id,
            pid,
            batches,
            accept_conflicts,
            keep_both=keep_both,
            actor=actor,
            now=now,
        )
        if result.already_imported:
            return result
        for student in sis_export.imported_students(conn, transfer_id=transfer_id):
            rows = {
                code: [(row, row["SQ"] in student.replaced.get(code, set())) for row in table_rows]
                for code, table_rows in student.rows.items()
            }
            self.last = self._sis.write_import(student.local_id, rows, _row)
        return result
