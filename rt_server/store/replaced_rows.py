"""Our record rows as they were before an import replaced them (an accepted CONFLICT).

DESIGN.md section 4 step 6: accepting a CONFLICT updates our row in place, the
old values kept. The audit log's ``detail`` holds no student data, so the old
values live here (``replaced_rows``), each as the JSON of its proto row
(records.proto's JSON form, the ``--records`` format), and the audit row of the
replacement names the table and SQ. ``rt student show`` lists them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import json_format
from sqlalchemy import Connection, insert, select

from rt_server.core.tables import TableSpec, row_to_proto
from rt_server.store._db import Bind, reading
from rt_server.store.audit import write_audit
from rt_server.store.schema import REPLACED_ROWS, STAFF_LEN

__all__ = ["ReplacedRow", "list_replaced_rows", "record_replaced_rows"]

_INSERT: Final = insert(REPLACED_ROWS)


@dataclass(frozen=True)
class ReplacedRow:
    """One version of a row of ours that an import replaced."""

    student_local_id: str
    table: str  # table code
    sq: int
    old_values: str  # JSON of the proto row (records.proto field names)
    transfer_id: str
    row_index: int  # the incoming row that replaced it, by its index in the transfer
    replaced_at: dt.datetime
    replaced_by: str


def record_replaced_rows(
    conn: Connection,
    spec: TableSpec,
    pid: str,
    transfer_id: str,
    replaced: Sequence[tuple[int, Mapping[str, Any]]],
    *,
    actor: str,
    at: dt.datetime,
) -> None:
    """Keep the old versions of our rows, ``(index of the incoming row, our row as it was)``.

    In the caller's transaction, with one audit row per replaced row (table,
    SQ and transfer row: no values).
    """
    if not replaced:
        return
    staff = actor[:STAFF_LEN]
    conn.execute(
        _INSERT,
        [
            {
                "student_local_id": pid,
                "table_code": spec.code,
                "sq": old["SQ"],
                "old_values": json_format.MessageToJson(
                    row_to_proto(spec, old), preserving_proto_field_name=True, indent=None
                ),
                "transfer_id": transfer_id,
                "row_index": index,
                "replaced_at": at,
                "replaced_by": staff,
            }
            for index, old in replaced
        ],
    )
    for index, old in replaced:
        write_audit(
            conn,
            actor=staff,
            action="import.replace_row",
            student_local_id=pid,
            detail=(
                f"{spec.code} SQ {old['SQ']} replaced by row {index} of transfer {transfer_id}; "
                "its old values are kept in replaced_rows"
            ),
            now=at,
        )


def list_replaced_rows(bind: Bind, student_local_id: str) -> list[ReplacedRow]:
    """The replaced versions of a student's rows, oldest first."""
    r = REPLACED_ROWS.c
    query = select(REPLACED_ROWS).where(r.student_local_id == student_local_id).order_by(r.id)
    with reading(bind) as conn:
        return [
            ReplacedRow(
                student_local_id=row["student_local_id"],
                table=row["table_code"],
                sq=row["sq"],
                old_values=row["old_values"],
                transfer_id=row["transfer_id"],
                row_index=row["row_index"],
                replaced_at=row["replaced_at"],
                replaced_by=row["replaced_by"],
            )
            for row in conn.execute(query).mappings()
        ]
