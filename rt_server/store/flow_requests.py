"""A request as the flows load and touch it: by side, locked, or as a peer names it.

``requests.get_request`` serves the registrar; these serve the flow steps, which
read a request inside their own unit of work (``rt_server.store.units``),
often under its row lock, and set the few columns a delivery moves. Hot:
every statement is built once.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any, Final

from sqlalchemy import Connection, Select, bindparam, select, update

from rt_client.request_refs import request_not_found
from rt_server.core.model import RequestRecord
from rt_server.core.statuses import Direction
from rt_server.store._db import Bind, reading
from rt_server.store._rows import request_from_row as _request_from_row
from rt_server.store.engine import begin_not_durable
from rt_server.store.schema import REQUESTS
from rt_server.store.units import Database

__all__ = [
    "find_request",
    "load_request",
    "record_delivery_progress",
    "request_side",
    "set_delivery_bytes",
    "set_transfer_id",
]


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
    return None if row is None else _request_from_row(row)


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
