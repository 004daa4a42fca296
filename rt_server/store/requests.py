"""Records requests, on both sides: recording them and reading them.

A request is stored once: a second one with the same id is a replay or a
re-send (``Duplicate``), and nothing changes. Recording one is one
transaction: it validates the signed ``RecordsRequest`` before it writes, then
writes the request, an audit row (no student data), a system message in the
request's thread and, for ours, the outbox item that sends it to the prior
district, in the same transaction, so nothing is lost on a crash (DESIGN.md
sections 4 and 6). Status changes are in ``request_status``, decisions in
``decisions``.

The registrar reads them with ``get_request`` / ``list_requests``; the flow
steps with ``load_request`` / ``find_request``, inside their own unit of work
and often under the row lock, and set the few columns a delivery moves.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Mapping
from typing import Any, Final

from sqlalchemy import Connection, Select, bindparam, func, insert, select, update

from protos.rt.v1 import peer_pb2
from rt_client.errors import Duplicate, InvalidInput, NotFound
from rt_client.ids import (
    RequestId,
    TransferId,
    district_of_school,
    parse_district_code,
    parse_school_code,
    parse_uuid,
)
from rt_client.request_refs import request_not_found
from rt_server.core.due_dates import DueDate
from rt_server.core.inputs import (
    list_limit,
    parse_actor,
    parse_birth_date,
    parse_ssid,
    parse_text,
    parse_timestamp,
)
from rt_server.core.model import RequestRecord
from rt_server.core.statuses import Direction, Status
from rt_server.core.tables import format_table_list, table_set
from rt_server.store._db import Bind, aware, reading, transaction
from rt_server.store._rows import load_request as _load_row
from rt_server.store._rows import request_from_row
from rt_server.store.audit import system_message, write_audit
from rt_server.store.engine import begin_not_durable
from rt_server.store.mail_outbox import queue_notice
from rt_server.store.outbox_queue import OutboxClaim, enqueue
from rt_server.store.schema import LOCAL_ID_LEN, NAME_LEN, REQUESTS, STAFF_LEN, TRANSFERS
from rt_server.store.students import is_enrolled
from rt_server.store.units import Database

__all__ = [
    "find_request",
    "get_request",
    "ids_sharing_start",
    "ids_starting_with",
    "list_requests",
    "load_request",
    "received_counts",
    "record_delivery_progress",
    "record_inbound_request",
    "record_outbound_request",
    "request_side",
    "set_delivery_bytes",
    "set_due",
    "set_transfer_id",
    "unanswered_inbound",
]

_NONCE_LEN: Final = 16


def record_outbound_request(
    bind: Bind,
    request: peer_pb2.RecordsRequest,
    envelope: bytes,
    *,
    local_student_id: str,
    actor: str,
    now: dt.datetime | None = None,
    claim: OutboxClaim | None = None,
) -> RequestRecord:
    """Store the request we signed (``envelope``) as QUEUED and queue it for sending.

    ``local_student_id`` is our student it is for. Writes the request, an
    outbox 'request' item (payload ``envelope``, to the prior district), an
    audit row and a system message, in one transaction. Raises
    ``InvalidInput``, ``NotFound`` (no such student), ``Duplicate`` (the
    request id exists).
    """
    at = aware(now)
    who = parse_actor(actor, STAFF_LEN)
    values = _request_values(request, at)
    with transaction(bind) as conn:
        if not is_enrolled(conn, local_student_id):
            raise NotFound("no student with this local id")
        _insert_request(
            conn,
            {
                **values,
                "direction": Direction.OUTBOUND.value,
                "status": Status.QUEUED.value,
                "other_district": values["prior_district"],
                "local_student_id": local_student_id,
                "request_envelope": envelope,
            },
        )
        enqueue(
            conn,
            kind="request",
            request_id=values["request_id"],
            to_district=values["prior_district"],
            payload=envelope,
            now=at,
            claim=claim,
        )
        write_audit(
            conn,
            actor=who,
            action="request.create",
            request_id=values["request_id"],
            student_local_id=local_student_id,
            detail=f"to {values['prior_district']}; tables {values['tables_requested']}",
            now=at,
        )
        system_message(
            conn,
            values["request_id"],
            f"Request created by {who} for tables {values['tables_requested']}; "
            f"queued for district {values['prior_district']}.",
            at,
        )
        return request_from_row(_load_row(conn, values["request_id"]))


def record_inbound_request(
    bind: Bind,
    request: peer_pb2.RecordsRequest,
    envelope: bytes,
    *,
    now: dt.datetime | None = None,
    due: DueDate | None = None,
) -> RequestRecord:
    """Store a verified request from another district as PENDING, with its due date.

    The caller has verified ``envelope``'s signature and that the requesting
    district is the TLS peer and the prior district is us; ``due`` is the
    deadline the flow computed (``rt_server.core.due_dates``). Raises
    ``InvalidInput`` (malformed or expired request) or ``Duplicate`` (this
    request id was received before: a replay or a re-send; nothing changes).
    """
    at = aware(now)
    values = _request_values(request, at)
    if values["expires_at"] is not None and values["expires_at"] <= at:
        raise InvalidInput("request has expired")
    actor = f"district {values['requesting_district']}"
    with transaction(bind) as conn:
        _insert_request(
            conn,
            {
                **values,
                "direction": Direction.INBOUND.value,
                "status": Status.PENDING.value,
                "other_district": values["requesting_district"],
                "local_student_id": None,
                "request_envelope": envelope,
                "received_at": at,
                **_due_values(due),
            },
        )
        write_audit(
            conn,
            actor=actor,
            action="request.receive",
            request_id=values["request_id"],
            detail=f"from {values['requesting_district']}; tables {values['tables_requested']}"
            + (f"; due {due.due_on or 'waiting'} ({due.rule.value})" if due else ""),
            now=at,
        )
        system_message(
            conn,
            values["request_id"],
            f"Request received from district {values['requesting_district']}"
            f" for tables {values['tables_requested']}; awaiting a decision.",
            at,
        )
        # The school's incoming-request list hears of it (sent by the mail worker).
        queue_notice(
            conn,
            kind="new_inbound",
            dedupe_key=f"new_inbound:{values['request_id']}",
            request_id=values["request_id"],
            now=at,
        )
        return request_from_row(_load_row(conn, values["request_id"]))


def _due_values(due: DueDate | None) -> dict[str, Any]:
    if due is None:
        return {}
    return {"due_on": due.due_on, "due_rule": due.rule.value, "due_note": due.note[:300]}


def set_due(bind: Bind, request_id: str, due: DueDate) -> None:
    """Give an inbound request a new due date (a calendar was loaded)."""
    with transaction(bind) as conn:
        conn.execute(
            update(REQUESTS).where(REQUESTS.c.request_id == request_id).values(**_due_values(due))
        )


def _request_values(request: peer_pb2.RecordsRequest, at: dt.datetime) -> dict[str, Any]:
    """The ``requests`` columns a signed ``RecordsRequest`` carries, validated."""
    request_id = parse_uuid(request.request_id, "request id")
    requesting = parse_district_code(request.requesting_district)
    prior = parse_district_code(request.prior_district)
    if requesting == prior:
        raise InvalidInput("a district cannot request records from itself")
    requesting_school = parse_school_code(request.requesting_school)
    prior_school = parse_school_code(request.prior_school)
    if district_of_school(requesting_school) != requesting:
        raise InvalidInput("the requesting school is not in the requesting district")
    if district_of_school(prior_school) != prior:
        raise InvalidInput("the prior school is not in the prior district")
    if len(request.nonce) != _NONCE_LEN:
        raise InvalidInput(f"request nonce must be {_NONCE_LEN} bytes")

    who = request.student
    ssid = parse_ssid(who.ssid)
    last = parse_text(who.legal_last_name, "legal last name", NAME_LEN)
    birth = parse_birth_date(who.birth_date, required=False)
    if ssid is None and (last is None or birth is None):
        raise InvalidInput(
            "a request must name the student by SSID, or by last name and birth date"
        )

    created = at
    if request.HasField("created_at"):
        created = parse_timestamp(request.created_at, "created-at")
    expires = None
    if request.HasField("expires_at"):
        expires = parse_timestamp(request.expires_at, "expires-at")
    if expires is not None and expires <= created:
        raise InvalidInput("request expires before it was created")
    try:
        tables = table_set(request.tables, empty_means_all=True)
    except InvalidInput:
        raise InvalidInput("request names an unknown record table") from None
    return {
        "request_id": request_id,
        "requesting_district": requesting,
        "requesting_school": requesting_school,
        "prior_district": prior,
        "prior_school": prior_school,
        "ssid": ssid,
        "legal_first_name": parse_text(who.legal_first_name, "legal first name", NAME_LEN),
        "legal_middle_name": parse_text(who.legal_middle_name, "legal middle name", NAME_LEN),
        "legal_last_name": last,
        "birth_date": birth,
        "gender": parse_text(who.gender, "gender", 10),
        "prior_local_id": parse_text(who.prior_local_id, "prior local id", LOCAL_ID_LEN),
        "requested_by": parse_text(request.requested_by, "requested by", STAFF_LEN),
        "tables_requested": format_table_list(tables),
        "created_at": created,
        "updated_at": at,
        "expires_at": expires,
        "attempts": 0,
        "delivery_bytes_total": 0,
        "delivery_bytes_done": 0,
        "foster_youth": request.foster_youth,
        "discipline_requested": request.discipline_records_requested,
    }


def _insert_request(conn: Connection, values: Mapping[str, Any]) -> None:
    exists = conn.execute(
        select(REQUESTS.c.request_id).where(REQUESTS.c.request_id == values["request_id"])
    ).first()
    if exists is not None:
        raise Duplicate("request already received")
    conn.execute(insert(REQUESTS), dict(values))


def get_request(bind: Bind, request_id: RequestId) -> RequestRecord:
    """The request ``request_id``. Raises ``NotFound``."""
    with reading(bind) as conn:
        return request_from_row(_load_row(conn, request_id))


def list_requests(
    bind: Bind,
    direction: Direction | str | None = None,
    status: Status | str | None = None,
    limit: int = 100,
) -> list[RequestRecord]:
    """Requests, newest first, optionally of one direction and/or status (``None``: any).

    ``direction`` and ``status`` may be given by name (as the Registrar
    service receives them). Raises ``InvalidInput`` for an unknown one.
    """
    query = select(REQUESTS).order_by(REQUESTS.c.created_at.desc(), REQUESTS.c.request_id)
    try:
        if direction:
            query = query.where(REQUESTS.c.direction == Direction(direction).value)
        if status:
            query = query.where(REQUESTS.c.status == Status(status).value)
    except ValueError:
        raise InvalidInput("unknown request direction or status") from None
    with reading(bind) as conn:
        rows = conn.execute(query.limit(list_limit(limit, 100))).mappings().all()
    return [request_from_row(r) for r in rows]


def unanswered_inbound(
    bind: Bind, *, school: str | None = None, limit: int = 1000
) -> list[RequestRecord]:
    """Inbound requests still awaiting a decision (the ones a due date binds), soonest
    due first, those whose clock waits last; optionally of one of our schools."""
    query = (
        select(REQUESTS)
        .where(
            REQUESTS.c.direction == Direction.INBOUND.value,
            REQUESTS.c.status == Status.PENDING.value,
            REQUESTS.c.approved.is_(None),
        )
        .order_by(REQUESTS.c.due_on.is_(None), REQUESTS.c.due_on, REQUESTS.c.created_at)
    )
    if school is not None:
        query = query.where(REQUESTS.c.prior_school == school)
    with reading(bind) as conn:
        rows = conn.execute(query.limit(list_limit(limit, 1000))).mappings().all()
    return [request_from_row(r) for r in rows]


def ids_awaiting(
    bind: Bind, direction: Direction, status: Status, *, undecided: bool = False
) -> list[RequestId]:
    """Every request of ``direction`` in ``status``, oldest first (a batch's work list).

    ``undecided``: only those not approved or rejected yet (``approved`` NULL).
    """
    query = (
        select(REQUESTS.c.request_id)
        .where(REQUESTS.c.direction == direction.value, REQUESTS.c.status == status.value)
        .order_by(REQUESTS.c.created_at, REQUESTS.c.request_id)
    )
    if undecided:
        query = query.where(REQUESTS.c.approved.is_(None))
    with reading(bind) as conn:
        return [RequestId(r) for r in conn.execute(query).scalars()]


def received_counts(bind: Bind, transfer_id: TransferId) -> str:
    """The row counts a transfer's header announced, as stored: "TST=120,HIS=64" ("" if none).

    Whatever the transfer's state (SEALED when we sent it, RECEIVING or
    RECEIVED when we receive it).
    """
    with reading(bind) as conn:
        counts = conn.execute(
            select(TRANSFERS.c.table_counts).where(TRANSFERS.c.transfer_id == transfer_id)
        ).scalar()
    return counts or ""


def ids_starting_with(bind: Bind, prefix: str, limit: int) -> list[str]:
    """Up to ``limit`` request ids that start with ``prefix`` (hex digits and dashes), sorted."""
    column = REQUESTS.c.request_id
    query = (
        select(column)
        .where(func.substr(column, 1, len(prefix)) == prefix)
        .order_by(column)
        .limit(limit)
    )
    with reading(bind) as conn:
        return list(conn.execute(query).scalars())


def ids_sharing_start(bind: Bind, starts: Collection[str]) -> list[str]:
    """Every request id whose first characters are one of ``starts`` (all of one length)."""
    if not starts:
        return []
    length = len(next(iter(starts)))
    column = REQUESTS.c.request_id
    query = select(column).where(func.substr(column, 1, length).in_(sorted(set(starts))))
    with reading(bind) as conn:
        return list(conn.execute(query).scalars())


# --- a request as the flows load and touch it -------------------------------------
# The flow steps read a request inside their own unit of work (rt_server.store.units),
# often under its row lock, and set the few columns a delivery moves. Hot: every
# statement is built once.


def load_request(
    bind: Bind, request_id: str, *, direction: Direction | None = None, lock: bool = False
) -> RequestRecord:
    """The request (of our ``direction`` side, when given).

    ``lock`` holds its row until the caller's transaction ends (FOR UPDATE).
    Raises ``NotFound``.
    """
    row = _fetch(bind, request_id, direction, lock)
    if row is None:
        raise request_not_found(request_id)
    return row


def find_request(bind: Bind, request_id: str, direction: Direction) -> RequestRecord | None:
    """The request of our ``direction`` side, or None: for a peer's claim to check."""
    return _fetch(bind, request_id, direction, False)


def request_side(bind: Bind, request_id: str) -> tuple[Direction, str] | None:
    """(our side, the other district) of the request ``request_id``, if we hold it."""
    with reading(bind) as conn:
        held = conn.execute(_REQUEST_SIDE, {"request_id": request_id}).first()
    return None if held is None else (Direction(held.direction), held.other_district)


def set_delivery_bytes(
    conn: Connection, request_id: str, now: dt.datetime, *, done: int, total: int | None = None
) -> None:
    """How much of the delivery is sent (of ``total``, when it changes), in the caller's unit."""
    values: dict[str, Any] = {"delivery_bytes_done": done}
    if total is not None:
        values["delivery_bytes_total"] = total
    _set_request(conn, request_id, now, values)


def set_transfer_id(conn: Connection, request_id: str, transfer_id: str, now: dt.datetime) -> None:
    """The transfer that brought the request's records, in the caller's unit."""
    _set_request(conn, request_id, now, {"transfer_id": transfer_id})


def record_delivery_progress(db: Database, request_id: str, sent: int) -> None:
    """Delivery progress for 'rt show' (best effort: ``NOT_DURABLE``, and no ``updated_at``)."""
    with begin_not_durable(db) as conn:
        conn.execute(
            REQUESTS.update()
            .where(REQUESTS.c.request_id == request_id)
            .values(delivery_bytes_done=sent)
        )


def _fetch(
    bind: Bind, request_id: str, direction: Direction | None, lock: bool
) -> RequestRecord | None:
    params = {"request_id": request_id}
    if direction:
        params["direction"] = direction.value
    with reading(bind) as conn:
        row = conn.execute(_request_query(bool(direction), lock), params).mappings().first()
    return None if row is None else request_from_row(row)


@functools.cache
def _request_query(by_direction: bool, lock: bool) -> Select[Any]:
    """Built once: a statement built anew costs SQLAlchemy its cache key on every call."""
    query = select(REQUESTS).where(REQUESTS.c.request_id == bindparam("request_id"))
    if by_direction:
        query = query.where(REQUESTS.c.direction == bindparam("direction"))
    return query.with_for_update() if lock else query


_REQUEST_SIDE: Final = select(REQUESTS.c.direction, REQUESTS.c.other_district).where(
    REQUESTS.c.request_id == bindparam("request_id")
)


def _set_request(
    conn: Connection, request_id: str, now: dt.datetime, values: dict[str, Any]
) -> None:
    # SET from the parameters: cheaper than .values(), which builds the statement anew.
    conn.execute(
        update(REQUESTS).where(REQUESTS.c.request_id == request_id), {"updated_at": now, **values}
    )
