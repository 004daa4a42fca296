"""Reading a request row, and turning rows into the core's values.

Shared by the store's modules: nothing here writes. Values come back as the
frozen dataclasses of ``rt_server.core.model``, never as database rows.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypeVar

from sqlalchemy import Connection, RowMapping, Select, bindparam, select

from rt_client.ids import RequestId
from rt_client.request_refs import request_not_found
from rt_server.core.model import RequestRecord, ThreadMessageRecord
from rt_server.core.statuses import Direction, Status
from rt_server.core.tables import parse_table_list
from rt_server.store.schema import REQUESTS

__all__ = ["load_request", "message_from_row", "record_from_row", "request_from_row"]

_Record = TypeVar("_Record")


def request_from_row(row: RowMapping) -> RequestRecord:
    """A ``requests`` row as a ``RequestRecord``."""
    return RequestRecord(
        request_id=row["request_id"],
        direction=Direction(row["direction"]),
        status=Status(row["status"]),
        status_reason=row["status_reason"],
        other_district=row["other_district"],
        requesting_district=row["requesting_district"],
        requesting_school=row["requesting_school"],
        prior_district=row["prior_district"],
        prior_school=row["prior_school"],
        ssid=row["ssid"],
        legal_first_name=row["legal_first_name"],
        legal_middle_name=row["legal_middle_name"],
        legal_last_name=row["legal_last_name"],
        birth_date=row["birth_date"],
        gender=row["gender"],
        prior_local_id=row["prior_local_id"],
        local_student_id=row["local_student_id"],
        requested_by=row["requested_by"],
        tables_requested=parse_table_list(row["tables_requested"]),
        approved=row["approved"],
        tables_approved=parse_table_list(row["tables_approved"]),
        reject_reason=row["reject_reason"],
        reject_text=row["reject_text"],
        decision_id=row["decision_id"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        transfer_id=row["transfer_id"],
        request_envelope=bytes(row["request_envelope"]),
        decision_envelope=(
            None if row["decision_envelope"] is None else bytes(row["decision_envelope"])
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        delivery_bytes_total=row["delivery_bytes_total"],
        delivery_bytes_done=row["delivery_bytes_done"],
        foster_youth=bool(row["foster_youth"]),
        discipline_requested=bool(row["discipline_requested"]),
        discipline_answer=row["discipline_answer"],
        grades_withheld=bool(row["grades_withheld"]),
        due_on=row["due_on"],
        due_rule=row["due_rule"],
        due_note=row["due_note"],
        held_reason=row["held_reason"],
        received_at=row["received_at"],
    )


def message_from_row(row: RowMapping) -> ThreadMessageRecord:
    """A ``thread_messages`` row as a ``ThreadMessageRecord``."""
    return record_from_row(ThreadMessageRecord, row)


def record_from_row(record: type[_Record], row: RowMapping) -> _Record:
    """A ``record`` (a frozen dataclass of ``rt_server.core.model``) from a row of its columns.

    For the tables whose columns are named, and typed, as the record's fields
    (``students``, ``thread_messages``): each field is the column of its name.
    """
    return record(**{f.name: row[f.name] for f in dataclasses.fields(record)})  # type: ignore[arg-type]


def load_request(conn: Connection, request_id: RequestId, *, lock: bool = False) -> RowMapping:
    """The ``requests`` row ``request_id`` (``lock``: FOR UPDATE). Raises ``NotFound``."""
    row = conn.execute(_request_query(lock), {"request_id": request_id}).mappings().first()
    if row is None:
        raise request_not_found(request_id)
    return row


@functools.cache
def _request_query(lock: bool) -> Select[Any]:
    """A request by id, optionally locked. Built once: SQLAlchemy caches the compiled
    form by the statement's cache key, which a statement built anew must compute
    again on every call; this one remembers it."""
    query = select(REQUESTS).where(REQUESTS.c.request_id == bindparam("request_id"))
    return query.with_for_update() if lock else query
