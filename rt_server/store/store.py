"""The district's durable operations with invariants, each one transaction.

Every function here takes a ``Bind`` (an engine: it commits its own
transaction; a connection: it runs in a savepoint of the caller's, so several
calls can share one commit -- or, for the small writes a flow makes inside its
own transaction, ``write_audit``, ``enqueue``, ``set_status`` and
``write_disclosure``, right in it: ``_db.within``), validates its input before
writing anything, writes an ``audit_log`` row for what it changed, and for a
status change a system message in the request's thread. Whatever must reach
the other district is queued in ``outbox`` in the same transaction as the
change that caused it, so nothing is lost on a crash (DESIGN.md sections 4
and 6).

Values come back as frozen dataclasses (``rt_server.core.model``). Audit
details never carry student data: no names, SSIDs, birth dates, record values
or text a registrar typed.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Connection, RowMapping, Select, bindparam, insert, or_, select, update
from sqlalchemy import exc as sa_exc

from protos.rt.v1 import common_pb2, peer_pb2, records_pb2
from rt_client.errors import Duplicate, InvalidInput, NotFound, WrongStatus
from rt_client.ids import (
    district_of_school,
    parse_district_code,
    parse_school_code,
    parse_uuid,
)
from rt_server.core.matching import name_key
from rt_server.core.model import (
    DisclosureRecord,
    RequestRecord,
    StudentRecord,
    ThreadMessageRecord,
)
from rt_server.core.statuses import Action, Direction, Status, transition
from rt_server.core.tables import (
    ALL_TABLES,
    TABLES,
    TableRef,
    Unconvertible,
    format_table_list,
    parse_date,
    parse_table_list,
    table_set,
)
from rt_server.core.validate import validate_batch
from rt_server.store._db import Bind, aware, reading, transaction, within
from rt_server.store.candidates import student_from_row
from rt_server.store.schema import (
    AUDIT_LOG,
    DISCLOSURES,
    LOCAL_ID_LEN,
    NAME_LEN,
    OUTBOX,
    RECORD_TABLES,
    REQUESTS,
    SEEN_MESSAGES,
    STAFF_LEN,
    STUDENTS,
    THREAD_MESSAGES,
    TRANSFERS,
)

__all__ = [
    "MAX_MESSAGE_LEN",
    "SYSTEM_AUTHOR",
    "TRANSFER_LEGAL_BASIS",
    "OutboxClaim",
    "add_student",
    "add_thread_message",
    "enqueue",
    "get_request",
    "get_student",
    "list_disclosures",
    "list_messages",
    "list_requests",
    "list_students",
    "mark_message_delivered",
    "received_counts",
    "record_decision",
    "record_inbound_request",
    "record_outbound_request",
    "remember_message",
    "set_status",
    "write_audit",
    "write_disclosure",
]

# 34 CFR 99.32(a)(1) asks for the "legitimate interests" of the party; for a
# transfer that is the exception of 99.31(a)(2).
TRANSFER_LEGAL_BASIS: Final = (
    "34 CFR 99.31(a)(2) transfer to a school where the student seeks to enroll"
)
SYSTEM_AUTHOR: Final = "system"
MAX_MESSAGE_LEN: Final = 4000
MAX_LIST_LIMIT: Final = 1000

_SSID_RE: Final = re.compile(r"[0-9]{10}")
_LOCAL_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}")
_GENDERS: Final = frozenset({"M", "F", "X"})
_NONCE_LEN: Final = 16


# --- small validators ---------------------------------------------------------


def _text(value: object, what: str, max_len: int, *, required: bool = False) -> str | None:
    """``value`` stripped; ``None`` if empty and not required. Raises ``InvalidInput``."""
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    value = (value or "").strip()
    if not value:
        if required:
            raise InvalidInput(f"{what} is required")
        return None
    if len(value) > max_len:
        raise InvalidInput(f"{what} is longer than {max_len} characters")
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character")
    return value


def _actor(actor: str) -> str:
    value = _text(actor, "the acting staff member (actor)", STAFF_LEN, required=True)
    assert value is not None
    return value


def _ssid(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or _SSID_RE.fullmatch(value) is None:
        raise InvalidInput("SSID must be the 10-digit statewide student identifier")
    return value


def _birth_date(value: object, *, required: bool) -> dt.date | None:
    if value is None or value == "":
        if required:
            raise InvalidInput("birth date is required")
        return None
    if isinstance(value, str):
        try:
            value = parse_date(value)
        except Unconvertible as exc:
            raise InvalidInput(f"birth date: {exc}") from None
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise InvalidInput("birth date must be a date")
    if not dt.date(1900, 1, 1) <= value <= dt.date.today():
        raise InvalidInput("birth date is not plausible")
    return value


def _timestamp(ts: Timestamp, what: str) -> dt.datetime:
    try:
        return ts.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(f"{what} is out of range") from None


def _limit(limit: int, default: int) -> int:
    # The proto's uint32 limit is 0 when unset.
    return default if limit <= 0 else min(limit, MAX_LIST_LIMIT)


def _reject_reason(reason: str | int | None) -> str:
    try:
        name = (
            common_pb2.RejectReason.Name(common_pb2.RejectReason.ValueType(reason))
            if isinstance(reason, int)
            else reason
        )
        if name is None:
            raise ValueError
        common_pb2.RejectReason.Value(name)
    except ValueError:
        raise InvalidInput("a rejection needs a reason code") from None
    if name == "REJECT_REASON_UNSPECIFIED":
        raise InvalidInput("a rejection needs a reason code")
    return name


# --- rows -> values ---------------------------------------------------------------


def _request_from_row(row: RowMapping) -> RequestRecord:
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
    )


def _message_from_row(row: RowMapping) -> ThreadMessageRecord:
    return ThreadMessageRecord(
        message_id=row["message_id"],
        request_id=row["request_id"],
        from_district=row["from_district"],
        author=row["author"],
        body=row["body"],
        sent_at=row["sent_at"],
        system=row["system"],
        delivered=row["delivered"],
    )


def _load_request(conn: Connection, request_id: str, *, lock: bool = False) -> RowMapping:
    row = conn.execute(_request_query(lock), {"request_id": request_id}).mappings().first()
    if row is None:
        raise NotFound("no request with this id")
    return row


@functools.cache
def _request_query(lock: bool) -> Select[Any]:
    """A request by id, optionally locked. Built once: SQLAlchemy caches the compiled
    form by the statement's cache key, which a statement built anew must compute
    again on every call; this one remembers it."""
    query = select(REQUESTS).where(REQUESTS.c.request_id == bindparam("request_id"))
    return query.with_for_update() if lock else query


# --- audit, outbox, thread: the side effects every change shares --------------------

# Built once, values given at execution (see ``_request_query``).
_INSERT_AUDIT: Final = insert(AUDIT_LOG)
_INSERT_OUTBOX: Final = insert(OUTBOX)
_INSERT_THREAD_MESSAGE: Final = insert(THREAD_MESSAGES)


def write_audit(
    bind: Bind,
    *,
    actor: str,
    action: str,
    request_id: str | None = None,
    student_local_id: str | None = None,
    detail: str = "",
    now: dt.datetime | None = None,
) -> None:
    """Append to the audit log. ``detail`` must hold no student data."""
    with within(bind) as conn:
        conn.execute(
            _INSERT_AUDIT,
            {
                "at": aware(now),
                "actor": actor[:STAFF_LEN],
                "action": action,
                "request_id": request_id,
                "student_local_id": student_local_id,
                "detail": detail[:500],
            },
        )


@dataclass(frozen=True)
class OutboxClaim:
    """An outbox item queued already claimed: by which worker, until when.

    The worker of the server making the change sends the item itself, at once,
    without claiming it in a transaction of its own (``DeliveryWorker.claim``).
    """

    worker_id: str
    until: dt.datetime


def enqueue(
    bind: Bind,
    *,
    kind: str,
    request_id: str,
    to_district: str,
    payload: bytes,
    now: dt.datetime | None = None,
    claim: OutboxClaim | None = None,
) -> int:
    """Queue ``payload`` for the delivery worker to send to ``to_district``; returns the outbox id.

    ``kind`` is one of 'request', 'decision', 'delivery', 'receipt',
    'import_notice', 'message'. The item is due at once (held by ``claim``'s
    worker, if given).
    """
    at = aware(now)
    with within(bind) as conn:
        result = conn.execute(
            _INSERT_OUTBOX,
            {
                "kind": kind,
                "request_id": request_id,
                "to_district": to_district,
                "payload": payload,
                "status": "QUEUED",
                "attempts": 0,
                "next_attempt_at": at,
                "created_at": at,
                "claimed_by": claim.worker_id if claim else None,
                "claimed_until": claim.until if claim else None,
            },
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def _system_message(conn: Connection, request_id: str, body: str, at: dt.datetime) -> None:
    """A local thread entry recording what happened; never sent to the other district."""
    conn.execute(
        _INSERT_THREAD_MESSAGE,
        {
            "message_id": str(uuid.uuid4()),
            "request_id": request_id,
            "from_district": None,
            "author": SYSTEM_AUTHOR,
            "body": body,
            "sent_at": at,
            "system": True,
            "delivered": False,
        },
    )


def remember_message(
    bind: Bind, message_id: str, kind: str, *, now: dt.datetime | None = None
) -> None:
    """Record that the decision/notice/receipt/message ``message_id`` was processed.

    Raises ``Duplicate`` if it was already: a replay or a re-send, to be
    acknowledged and otherwise ignored.
    """
    try:
        with transaction(bind) as conn:
            seen = conn.execute(
                select(SEEN_MESSAGES.c.message_id).where(SEEN_MESSAGES.c.message_id == message_id)
            ).first()
            if seen is not None:
                raise Duplicate(f"{kind} already received")
            conn.execute(
                insert(SEEN_MESSAGES), dict(message_id=message_id, kind=kind, at=aware(now))
            )
    except sa_exc.IntegrityError as error:
        # Two replicas took the same re-send at once: the other one recorded it
        # first (PostgreSQL; SQLite has one writer). Same answer as a replay.
        raise Duplicate(f"{kind} already received") from error


# --- students ---------------------------------------------------------------------


def _new_local_id(conn: Connection) -> str:
    """A fresh local id: "S" and nine random digits, unused so far."""
    while True:
        candidate = f"S{secrets.randbelow(10**9):09d}"
        taken = conn.execute(
            select(STUDENTS.c.local_id).where(STUDENTS.c.local_id == candidate)
        ).first()
        if taken is None:
            return candidate


def add_student(
    bind: Bind,
    student: Mapping[str, Any],
    batches: Iterable[records_pb2.RecordBatch] = (),
    *,
    actor: str,
    now: dt.datetime | None = None,
) -> str:
    """Enroll a student (and load their existing records); returns the local id.

    ``student`` has the keys of ``registrar_pb2.Student``: ``local_id``
    (empty: one is generated, "S" + 9 digits), ``ssid`` (optional, 10
    digits), ``legal_first_name``, ``legal_middle_name`` (optional),
    ``legal_last_name``, ``birth_date`` (``date`` or "YYYY-MM-DD"), ``gender``
    (optional: M, F or X) and ``school`` (optional CDS code). ``batches`` are
    validated like a peer's; their rows get SQ 1, 2, ... per table in order,
    and keep their SRC. Raises ``InvalidInput`` (bad field or row) or
    ``Duplicate`` (local id or SSID already enrolled); nothing is written then.
    """
    at = aware(now)
    who = _actor(actor)
    local_id = _text(student.get("local_id"), "local id", LOCAL_ID_LEN)
    if local_id is not None and _LOCAL_ID_RE.fullmatch(local_id) is None:
        raise InvalidInput("local id may hold only letters, digits, '-' and '_'")
    first = _text(student.get("legal_first_name"), "legal first name", NAME_LEN, required=True)
    last = _text(student.get("legal_last_name"), "legal last name", NAME_LEN, required=True)
    assert first is not None and last is not None
    gender = _text(student.get("gender"), "gender", 1)
    if gender is not None and gender.upper() not in _GENDERS:
        raise InvalidInput("gender must be M, F or X")
    school = student.get("school") or None
    values: dict[str, Any] = {
        "ssid": _ssid(student.get("ssid")),
        "legal_first_name": first,
        "legal_middle_name": _text(student.get("legal_middle_name"), "legal middle name", NAME_LEN),
        "legal_last_name": last,
        "birth_date": _birth_date(student.get("birth_date"), required=True),
        "gender": gender.upper() if gender else None,
        "school": parse_school_code(school) if school else None,
        "last_name_key": name_key(last),
        "first_name_key": name_key(first),
        "created_at": at,
    }

    rows_by_table: dict[str, list[dict[str, Any]]] = {}
    for batch in batches:
        code, rows = _validated_batch(batch, rows_by_table)
        rows_by_table.setdefault(code, []).extend(rows)

    with transaction(bind) as conn:
        if local_id is None:
            local_id = _new_local_id(conn)
        elif conn.execute(
            select(STUDENTS.c.local_id).where(STUDENTS.c.local_id == local_id)
        ).first():
            raise Duplicate("a student with this local id is already enrolled")
        if values["ssid"] is not None:
            holder = conn.execute(
                select(STUDENTS.c.local_id).where(STUDENTS.c.ssid == values["ssid"])
            ).first()
            if holder is not None:
                raise Duplicate(f"a student with this SSID is already enrolled ({holder[0]})")
        conn.execute(insert(STUDENTS), dict(local_id=local_id, **values))
        for code, rows in rows_by_table.items():
            for sq, row in enumerate(rows, start=1):
                row["PID"], row["SQ"] = local_id, sq
            conn.execute(insert(RECORD_TABLES[code]), rows)
        counts = ", ".join(f"{c}={len(rows_by_table[c])}" for c in ALL_TABLES if c in rows_by_table)
        write_audit(
            conn,
            actor=who,
            action="student.add",
            student_local_id=local_id,
            detail=f"records: {counts}" if counts else "no records",
            now=at,
        )
    return local_id


def _validated_batch(
    batch: records_pb2.RecordBatch, so_far: Mapping[str, list[dict[str, Any]]]
) -> tuple[str, list[dict[str, Any]]]:
    """``validate_batch`` with row indexes counted across the batches of a table."""
    spec = next((t for t in TABLES.values() if t.enum == batch.table), None)
    first_index = len(so_far.get(spec.code, ())) if spec is not None else 0
    return validate_batch(batch, first_index=first_index)


def get_student(bind: Bind, local_id: str) -> StudentRecord:
    """The student ``local_id``. Raises ``NotFound``."""
    with reading(bind) as conn:
        row = (
            conn.execute(select(STUDENTS).where(STUDENTS.c.local_id == local_id)).mappings().first()
        )
    if row is None:
        raise NotFound("no student with this local id")
    return student_from_row(row)


def list_students(bind: Bind, query: str = "", limit: int = 50) -> list[StudentRecord]:
    """Students by local id or SSID (exact) or by the start of a last or first name.

    Name search ignores case and accents. Empty ``query``: all, by local id.
    """
    select_students = select(STUDENTS).order_by(STUDENTS.c.local_id).limit(_limit(limit, 50))
    query = query.strip()
    if query:
        key = name_key(query)  # letters and digits only: safe inside LIKE
        conditions = [STUDENTS.c.local_id == query, STUDENTS.c.ssid == query]
        if key:
            conditions += [
                STUDENTS.c.last_name_key.like(key + "%"),
                STUDENTS.c.first_name_key.like(key + "%"),
            ]
        select_students = select_students.where(or_(*conditions))
    with reading(bind) as conn:
        return [student_from_row(r) for r in conn.execute(select_students).mappings()]


# --- requests -------------------------------------------------------------------


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
    ssid = _ssid(who.ssid)
    last = _text(who.legal_last_name, "legal last name", NAME_LEN)
    birth = _birth_date(who.birth_date, required=False)
    if ssid is None and (last is None or birth is None):
        raise InvalidInput(
            "a request must name the student by SSID, or by last name and birth date"
        )

    created = at
    if request.HasField("created_at"):
        created = _timestamp(request.created_at, "created-at")
    expires = None
    if request.HasField("expires_at"):
        expires = _timestamp(request.expires_at, "expires-at")
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
        "legal_first_name": _text(who.legal_first_name, "legal first name", NAME_LEN),
        "legal_middle_name": _text(who.legal_middle_name, "legal middle name", NAME_LEN),
        "legal_last_name": last,
        "birth_date": birth,
        "gender": _text(who.gender, "gender", 10),
        "prior_local_id": _text(who.prior_local_id, "prior local id", LOCAL_ID_LEN),
        "requested_by": _text(request.requested_by, "requested by", STAFF_LEN),
        "tables_requested": format_table_list(tables),
        "created_at": created,
        "updated_at": at,
        "expires_at": expires,
        "attempts": 0,
        "delivery_bytes_total": 0,
        "delivery_bytes_done": 0,
    }


def _insert_request(conn: Connection, values: Mapping[str, Any]) -> None:
    exists = conn.execute(
        select(REQUESTS.c.request_id).where(REQUESTS.c.request_id == values["request_id"])
    ).first()
    if exists is not None:
        raise Duplicate("request already received")
    conn.execute(insert(REQUESTS), dict(values))


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
    who = _actor(actor)
    values = _request_values(request, at)
    with transaction(bind) as conn:
        if (
            conn.execute(
                select(STUDENTS.c.local_id).where(STUDENTS.c.local_id == local_student_id)
            ).first()
            is None
        ):
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
        _system_message(
            conn,
            values["request_id"],
            f"Request created by {who} for tables {values['tables_requested']}; "
            f"queued for district {values['prior_district']}.",
            at,
        )
        return _request_from_row(_load_request(conn, values["request_id"]))


def record_inbound_request(
    bind: Bind,
    request: peer_pb2.RecordsRequest,
    envelope: bytes,
    *,
    now: dt.datetime | None = None,
) -> RequestRecord:
    """Store a verified request from another district as PENDING.

    The caller has verified ``envelope``'s signature and that the requesting
    district is the TLS peer and the prior district is us. Raises
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
            },
        )
        write_audit(
            conn,
            actor=actor,
            action="request.receive",
            request_id=values["request_id"],
            detail=f"from {values['requesting_district']}; tables {values['tables_requested']}",
            now=at,
        )
        _system_message(
            conn,
            values["request_id"],
            f"Request received from district {values['requesting_district']}"
            f" for tables {values['tables_requested']}; awaiting a decision.",
            at,
        )
        return _request_from_row(_load_request(conn, values["request_id"]))


def _change_status(
    conn: Connection,
    row: RowMapping,
    action: Action,
    *,
    actor: str,
    at: dt.datetime,
    reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
    message: str | None = None,
) -> Status:
    """Apply ``action`` to the request ``row``: guarded update, audit, system message."""
    current = row["status"]
    new = transition(current, action, row["direction"])
    result = conn.execute(
        update(REQUESTS).where(
            REQUESTS.c.request_id == row["request_id"], REQUESTS.c.status == current
        ),
        {"status": new.value, "status_reason": reason, "updated_at": at, **(extra or {})},
    )
    if result.rowcount != 1:
        # Someone else changed it between our read and this write.
        raise WrongStatus("the request changed while this was being done; look again and retry")
    write_audit(
        conn,
        actor=actor,
        action=f"request.{action.lower()}",
        request_id=row["request_id"],
        student_local_id=(extra or {}).get("local_student_id", row["local_student_id"]),
        detail=f"{current} -> {new}",
        now=at,
    )
    if message is None:
        message = f"Status {current} -> {new} ({actor})." if new != current else None
        if message and reason:
            message += f" Reason: {reason}"
    if message:
        _system_message(conn, row["request_id"], message, at)
    return new


def set_status(
    bind: Bind,
    request_id: str,
    action: Action | str,
    *,
    actor: str,
    reason: str | None = None,
    now: dt.datetime | None = None,
) -> RequestRecord:
    """Apply a status ``action`` (not APPROVE/REJECT: see ``record_decision``).

    ``reason`` is kept as the status reason (e.g. why it FAILED) and shown in
    the thread. RETRY also puts the request's FAILED outbox items back in the
    queue, due now. Raises ``NotFound``, ``WrongStatus`` (not allowed in the
    current status), ``InvalidInput``.
    """
    at = aware(now)
    who = _actor(actor)
    try:
        act = Action(action)
    except ValueError:
        raise InvalidInput("unknown request action") from None
    if act in (Action.APPROVE, Action.REJECT):
        raise InvalidInput("decisions are recorded with record_decision")
    why = _text(reason, "status reason", 500)
    with within(bind) as conn:
        row = _load_request(conn, request_id, lock=True)
        _change_status(conn, row, act, actor=who, at=at, reason=why)
        if act is Action.RETRY:
            # A fresh start, horizon and all: measured from the original queueing,
            # a retry past the horizon would fail again at its first refusal.
            conn.execute(
                update(OUTBOX)
                .where(OUTBOX.c.request_id == request_id, OUTBOX.c.status == "FAILED")
                .values(
                    status="QUEUED",
                    attempts=0,
                    next_attempt_at=at,
                    created_at=at,
                    last_error=None,
                    claimed_by=None,
                    claimed_until=None,
                )
            )
            conn.execute(
                update(REQUESTS)
                .where(REQUESTS.c.request_id == request_id)
                .values(attempts=0, next_attempt_at=at)
            )
        return _request_from_row(_load_request(conn, request_id))


def record_decision(
    bind: Bind,
    request_id: str,
    *,
    approved: bool,
    actor: str,
    tables: Sequence[TableRef] = (),
    reason: str | int | None = None,
    text: str | None = None,
    transfer_id: str | None = None,
    local_student_id: str | None = None,
    decision_id: str | None = None,
    decision_envelope: bytes | None = None,
    decided_by: str | None = None,
    decided_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
    claim: OutboxClaim | None = None,
) -> RequestRecord:
    """Record an approval or rejection of ``request_id``, on either side.

    INBOUND (our registrar decides; the request must be PENDING and
    undecided): ``decision_envelope`` (the signed ``Decision``) is required and
    queued as an outbox 'decision' to the requester. Approval needs
    ``local_student_id`` (the confirmed match), ``transfer_id``, and ``tables``
    (default: all requested; only requested ones allowed); it keeps the
    request PENDING and also queues an outbox 'delivery' (payload: the
    transfer id) for the delivery worker. Rejection needs ``reason`` (a
    ``RejectReason`` name or value; ``text`` required with OTHER) and makes
    it REJECTED.

    OUTBOUND (the prior district's verified ``Decision`` arrived): the
    decision id is remembered (a re-sent decision raises ``Duplicate``);
    ``decided_by``/``decided_at`` are taken from the decision. Approval
    (QUEUED or PENDING -> PENDING) records tables and transfer id; an approval
    overtaken by its own records (DATA_RECEIVED or IMPORTED, same transfer id)
    is recorded and leaves the status as it is; rejection -> REJECTED.

    Both sides: ``decision_id`` (a UUID, the one inside the signed
    ``Decision``) is required; approved tables must have been requested.

    Raises ``NotFound``, ``WrongStatus``, ``InvalidInput``, ``Duplicate``
    (OUTBOUND: this decision id was processed before).
    """
    at = aware(now)
    who = _actor(actor)
    reject_text = _text(text, "rejection text", 1000)
    with transaction(bind) as conn:
        row = _load_request(conn, request_id, lock=True)
        side = Direction(row["direction"])
        requested = parse_table_list(row["tables_requested"])
        extra: dict[str, Any] = {
            "approved": approved,
            "decided_by": _text(decided_by, "decided by", STAFF_LEN) or who,
            "decided_at": aware(decided_at) if decided_at is not None else at,
        }
        if side is Direction.INBOUND:
            if row["approved"] is not None:
                verdict = "approved" if row["approved"] else "rejected"
                raise WrongStatus(f"request was already {verdict}")
            transition(row["status"], Action.APPROVE if approved else Action.REJECT, side)
            if decision_envelope is None:
                raise InvalidInput("a decision must be signed before it is recorded")
        extra["decision_id"] = parse_uuid(decision_id, "decision id")
        if side is Direction.OUTBOUND:
            remember_message(conn, extra["decision_id"], "decision", now=at)
        extra["decision_envelope"] = decision_envelope

        if approved:
            chosen = table_set(tables) or requested
            extra_tables = [t for t in chosen if t not in requested]
            if extra_tables:
                raise InvalidInput(
                    "cannot approve tables that were not requested: " + ",".join(extra_tables)
                )
            if transfer_id is None:
                raise InvalidInput("an approval needs the transfer id")
            extra["transfer_id"] = parse_uuid(transfer_id, "transfer id")
            extra["tables_approved"] = format_table_list(chosen)
            if side is Direction.INBOUND:
                if not local_student_id:
                    raise InvalidInput("confirm which of our students the request is for")
                if (
                    conn.execute(
                        select(STUDENTS.c.local_id).where(STUDENTS.c.local_id == local_student_id)
                    ).first()
                    is None
                ):
                    raise NotFound("no student with this local id")
                extra["local_student_id"] = local_student_id
            message = (
                f"Approved by {extra['decided_by']} for tables {extra['tables_approved']}."
                + (" Records will be sent." if side is Direction.INBOUND else " Records to follow.")
            )
            action = Action.APPROVE
        else:
            code = _reject_reason(reason)
            if code == "OTHER" and reject_text is None:
                raise InvalidInput("a rejection for another reason needs an explanation")
            extra["reject_reason"], extra["reject_text"] = code, reject_text
            message = f"Rejected by {extra['decided_by']}: {code}" + (
                f" ({reject_text})." if reject_text else "."
            )
            action = Action.REJECT

        if (
            side is Direction.OUTBOUND
            and approved
            and row["status"] in (Status.DATA_RECEIVED, Status.IMPORTED)
            and row["transfer_id"] == extra["transfer_id"]
        ):
            # The prior district sends the decision and the records at once, and
            # the records may arrive first: the approval is recorded all the same,
            # and the status stays where the records moved it.
            late = conn.execute(
                update(REQUESTS)
                .where(REQUESTS.c.request_id == request_id, REQUESTS.c.status == row["status"])
                .values(updated_at=at, **extra)
            )
            if late.rowcount != 1:
                raise WrongStatus(
                    "the request changed while this was being done; look again and retry"
                )
            write_audit(
                conn,
                actor=who,
                action="request.approve",
                request_id=request_id,
                student_local_id=row["local_student_id"],
                detail=f"{row['status']}; the records arrived before the decision",
                now=at,
            )
            _system_message(conn, request_id, message, at)
        else:
            # A rejection's reason stays on the request, for 'rt requests' to show.
            reason = None if approved else extra["reject_reason"]
            _change_status(
                conn, row, action, actor=who, at=at, reason=reason, extra=extra, message=message
            )
        if side is Direction.INBOUND:
            assert decision_envelope is not None
            enqueue(
                conn,
                kind="decision",
                request_id=request_id,
                to_district=row["other_district"],
                payload=decision_envelope,
                now=at,
                claim=claim,
            )
            if approved:
                enqueue(
                    conn,
                    kind="delivery",
                    request_id=request_id,
                    to_district=row["other_district"],
                    payload=extra["transfer_id"].encode("ascii"),
                    now=at,
                    claim=claim,
                )
        return _request_from_row(_load_request(conn, request_id))


def get_request(bind: Bind, request_id: str) -> RequestRecord:
    """The request ``request_id``. Raises ``NotFound``."""
    with reading(bind) as conn:
        return _request_from_row(_load_request(conn, request_id))


def list_requests(
    bind: Bind,
    direction: Direction | str | None = None,
    status: Status | str | None = None,
    limit: int = 100,
) -> list[RequestRecord]:
    """Requests, newest first, optionally of one direction and/or status (``None``: any)."""
    query = select(REQUESTS).order_by(REQUESTS.c.created_at.desc(), REQUESTS.c.request_id)
    try:
        if direction:
            query = query.where(REQUESTS.c.direction == Direction(direction).value)
        if status:
            query = query.where(REQUESTS.c.status == Status(status).value)
    except ValueError:
        raise InvalidInput("unknown request direction or status") from None
    with reading(bind) as conn:
        rows = conn.execute(query.limit(_limit(limit, 100))).mappings().all()
    return [_request_from_row(r) for r in rows]


def received_counts(bind: Bind, transfer_id: str) -> str:
    """The row counts a transfer's header announced, as stored: "TST=120,HIS=64" ("" if none).

    Whatever the transfer's state (SEALED when we sent it, RECEIVING or
    RECEIVED when we receive it).
    """
    with reading(bind) as conn:
        counts = conn.execute(
            select(TRANSFERS.c.table_counts).where(TRANSFERS.c.transfer_id == transfer_id)
        ).scalar()
    return counts or ""


# --- disclosures (34 CFR 99.32) ------------------------------------------------------


def write_disclosure(
    bind: Bind,
    *,
    student_local_id: str,
    receiving_district: str,
    receiving_school: str,
    tables: Iterable[TableRef],
    request_id: str,
    acting_staff: str,
    legal_basis: str = TRANSFER_LEGAL_BASIS,
    now: dt.datetime | None = None,
) -> DisclosureRecord:
    """Record that the student's ``tables`` were disclosed (34 CFR 99.32(a)).

    Raises ``InvalidInput`` or ``NotFound`` (no such student).
    """
    at = aware(now)
    staff = _actor(acting_staff)
    district = parse_district_code(receiving_district)
    school = parse_school_code(receiving_school)
    codes = table_set(tables)
    if not codes:
        raise InvalidInput("a disclosure names at least one record table")
    basis = _text(legal_basis, "legal basis", 200, required=True)
    with within(bind) as conn:
        get_student(conn, student_local_id)
        result = conn.execute(
            insert(DISCLOSURES),
            dict(
                student_local_id=student_local_id,
                receiving_district=district,
                receiving_school=school,
                tables=format_table_list(codes),
                disclosed_at=at,
                request_id=request_id,
                legal_basis=basis,
                acting_staff=staff,
            ),
        )
        key = result.inserted_primary_key
        assert key is not None
        write_audit(
            conn,
            actor=staff,
            action="disclosure.write",
            request_id=request_id,
            student_local_id=student_local_id,
            detail=f"to {district}; tables {format_table_list(codes)}",
            now=at,
        )
        return _disclosures(conn, DISCLOSURES.c.id == int(key[0]))[0]


def _disclosures(conn: Connection, condition: Any) -> list[DisclosureRecord]:
    d, s = DISCLOSURES.c, STUDENTS.c
    query = (
        select(DISCLOSURES, s.legal_first_name, s.legal_middle_name, s.legal_last_name)
        .join(STUDENTS, s.local_id == d.student_local_id)
        .order_by(d.disclosed_at, d.id)
    )
    if condition is not None:
        query = query.where(condition)
    result = []
    for row in conn.execute(query).mappings():
        given = " ".join(n for n in (row["legal_first_name"], row["legal_middle_name"]) if n)
        result.append(
            DisclosureRecord(
                id=row["id"],
                student_local_id=row["student_local_id"],
                student_name=f"{row['legal_last_name']}, {given}",
                receiving_district=row["receiving_district"],
                receiving_school=row["receiving_school"],
                tables=parse_table_list(row["tables"]),
                disclosed_at=row["disclosed_at"],
                request_id=row["request_id"],
                legal_basis=row["legal_basis"],
                acting_staff=row["acting_staff"],
            )
        )
    return result


def list_disclosures(bind: Bind, student_local_id: str | None = None) -> list[DisclosureRecord]:
    """The record of disclosures, oldest first: of one student, or (``None``/"") of all."""
    condition = DISCLOSURES.c.student_local_id == student_local_id if student_local_id else None
    with reading(bind) as conn:
        return _disclosures(conn, condition)


# --- thread messages --------------------------------------------------------------------


def add_thread_message(
    bind: Bind,
    request_id: str,
    *,
    author: str,
    body: str,
    from_district: str,
    message_id: str | None = None,
    sent_at: dt.datetime | None = None,
    envelope: bytes | None = None,
    delivered: bool = False,
    now: dt.datetime | None = None,
) -> ThreadMessageRecord:
    """Add a registrar's message to a request's thread.

    Ours: pass ``envelope`` (the signed ``ThreadMessage`` with this
    ``message_id`` and ``sent_at``); it is queued as an outbox 'message' to the
    other district. A peer's (verified): no envelope, ``delivered=True``.
    Raises ``NotFound`` (no such request), ``InvalidInput``, ``Duplicate``
    (this message id is already in the thread: a replay or re-send).
    """
    at = aware(now)
    who = _actor(author)
    text = _text(body, "message", MAX_MESSAGE_LEN, required=True)
    district = parse_district_code(from_district)
    mid = parse_uuid(message_id or str(uuid.uuid4()), "message id")
    with transaction(bind) as conn:
        row = _load_request(conn, request_id)
        exists = conn.execute(
            select(THREAD_MESSAGES.c.message_id).where(THREAD_MESSAGES.c.message_id == mid)
        ).first()
        if exists is not None:
            raise Duplicate("message already received")
        conn.execute(
            insert(THREAD_MESSAGES),
            dict(
                message_id=mid,
                request_id=request_id,
                from_district=district,
                author=who,
                body=text,
                sent_at=aware(sent_at) if sent_at is not None else at,
                system=False,
                delivered=delivered,
            ),
        )
        if envelope is not None:
            enqueue(
                conn,
                kind="message",
                request_id=request_id,
                to_district=row["other_district"],
                payload=envelope,
                now=at,
            )
        write_audit(
            conn,
            actor=who if envelope is not None else f"district {district}",
            action="message.post" if envelope is not None else "message.receive",
            request_id=request_id,
            now=at,
        )
        found = (
            conn.execute(select(THREAD_MESSAGES).where(THREAD_MESSAGES.c.message_id == mid))
            .mappings()
            .one()
        )
        return _message_from_row(found)


def mark_message_delivered(bind: Bind, message_id: str) -> None:
    """Note that the other district acknowledged our message. Raises ``NotFound``."""
    with transaction(bind) as conn:
        result = conn.execute(
            update(THREAD_MESSAGES)
            .where(THREAD_MESSAGES.c.message_id == message_id)
            .values(delivered=True)
        )
        if result.rowcount != 1:
            raise NotFound("no message with this id")


def list_messages(bind: Bind, request_id: str) -> list[ThreadMessageRecord]:
    """A request's thread, oldest first. Raises ``NotFound``."""
    with reading(bind) as conn:
        _load_request(conn, request_id)
        rows = (
            conn.execute(
                select(THREAD_MESSAGES)
                .where(THREAD_MESSAGES.c.request_id == request_id)
                .order_by(THREAD_MESSAGES.c.sent_at, THREAD_MESSAGES.c.id)
            )
            .mappings()
            .all()
        )
    return [_message_from_row(r) for r in rows]
