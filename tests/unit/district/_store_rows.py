"""Helpers of the tests of ``rt_server.store``'s modules: a decision to record, and reading back."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine, select

from rt_client.ids import RequestId
from rt_server.core.model import RequestRecord
from rt_server.store import decisions
from rt_server.store.decisions import Decision
from rt_server.store.schema import AUDIT_LOG, OUTBOX


def decide(engine: Engine, request_id: str, **fields: Any) -> RequestRecord:
    """Record a ``Decision`` on ``request_id`` with a fresh decision id and ``fields``."""
    decision = Decision(request_id=RequestId(request_id), decision_id=str(uuid.uuid4()), **fields)
    return decisions.record_decision(engine, decision)


def outbox_rows(engine: Engine) -> list[tuple[str, str, bytes, str]]:
    """Every outbox item, oldest first: (kind, to_district, payload, status)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(OUTBOX.c.kind, OUTBOX.c.to_district, OUTBOX.c.payload, OUTBOX.c.status).order_by(
                OUTBOX.c.id
            )
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def audit_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every audit log row, oldest first."""
    with engine.connect() as conn:
        return [
            dict(r) for r in conn.execute(select(AUDIT_LOG).order_by(AUDIT_LOG.c.id)).mappings()
        ]
