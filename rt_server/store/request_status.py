"""A request's status: moving it along the transitions of ``rt_server.core.statuses``.

Every change is guarded (the row is updated only if its status is still the
one read, so two servers never both apply a change), audited (no student
data) and told in the request's thread as a system message, in the caller's
transaction. Decisions (APPROVE, REJECT) go through ``rt_server.store.decisions``,
which uses ``change_status`` too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, RowMapping, update

from rt_client.errors import InvalidInput, WrongStatus
from rt_client.ids import RequestId
from rt_server.core.inputs import parse_actor, parse_text
from rt_server.core.model import RequestRecord
from rt_server.core.statuses import Action, OutboxStatus, Status, transition
from rt_server.store._db import Bind, aware, within
from rt_server.store._rows import load_request, request_from_row
from rt_server.store.audit import system_message, write_audit
from rt_server.store.mail_outbox import queue_for_status
from rt_server.store.schema import OUTBOX, REQUESTS, STAFF_LEN

__all__ = ["change_status", "set_status"]


def change_status(
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
    """Apply ``action`` to the request ``row``: guarded update, audit, system message.

    ``extra`` are more columns to write with the status; ``message`` replaces
    the thread's default "Status A -> B (actor)." line. Raises ``WrongStatus``
    (not allowed in the current status, or changed since ``row`` was read).
    """
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
        system_message(conn, row["request_id"], message, at)
    if new != current:
        queue_for_status(conn, row["request_id"], row["direction"], new.value, at)
    return new


def set_status(
    bind: Bind,
    request_id: RequestId,
    action: Action,
    *,
    actor: str,
    reason: str | None = None,
    now: dt.datetime | None = None,
) -> RequestRecord:
    """Apply a status ``action`` (not APPROVE/REJECT: see ``decisions.record_decision``).

    ``reason`` is kept as the status reason (e.g. why it FAILED) and shown in
    the thread. RETRY also puts the request's FAILED outbox items back in the
    queue, due now. Runs in the caller's transaction when given a connection in
    one (``_db.within``). Raises ``NotFound``, ``WrongStatus`` (not allowed in
    the current status), ``InvalidInput`` (unknown action, missing actor).
    """
    at = aware(now)
    who = parse_actor(actor, STAFF_LEN)
    try:
        act = Action(action)
    except ValueError:
        raise InvalidInput("unknown request action") from None
    if act in (Action.APPROVE, Action.REJECT):
        raise InvalidInput("decisions are recorded with record_decision")
    why = parse_text(reason, "status reason", 500)
    with within(bind) as conn:
        row = load_request(conn, request_id, lock=True)
        change_status(conn, row, act, actor=who, at=at, reason=why)
        if act is Action.RETRY:
            # A fresh start, horizon and all: measured from the original queueing,
            # a retry past the horizon would fail again at its first refusal.
            conn.execute(
                update(OUTBOX)
                .where(
                    OUTBOX.c.request_id == request_id, OUTBOX.c.status == OutboxStatus.FAILED.value
                )
                .values(
                    status=OutboxStatus.QUEUED.value,
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
        return request_from_row(load_request(conn, request_id))
