"""Queueing what must reach another district: the ``outbox`` rows a change writes.

An item is queued in the same transaction as the change that caused it, so a
crash loses neither or both (DESIGN.md sections 4 and 6); the delivery worker
(``rt_server.flows.outbox``) sends it later, or at once when the change's
server claims it as it queues it (``OutboxClaim``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from sqlalchemy import insert

from rt_client.ids import DistrictCode, RequestId
from rt_server.core.statuses import OutboxStatus
from rt_server.store._db import Bind, aware, within
from rt_server.store.schema import OUTBOX

__all__ = ["OutboxClaim", "enqueue"]

# Built once, values given at execution (see ``_rows._request_query``).
_INSERT_OUTBOX: Final = insert(OUTBOX)


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
    request_id: RequestId,
    to_district: DistrictCode,
    payload: bytes,
    now: dt.datetime | None = None,
    claim: OutboxClaim | None = None,
) -> int:
    """Queue ``payload`` for the delivery worker to send to ``to_district``; returns the outbox id.

    ``kind`` is one of 'request', 'decision', 'delivery', 'receipt',
    'import_notice', 'message'. The item is due at once (held by ``claim``'s
    worker, if given). Runs in the caller's transaction when given a
    connection in one (``_db.within``). Raises ``ValueError`` for a naive ``now``.
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
                "status": OutboxStatus.QUEUED.value,
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
