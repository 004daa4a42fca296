"""The request state machine of DESIGN.md section 4, as data.

Each side of a request has its own statuses (they follow Aeries' views):

- requesting district (OUTBOUND): QUEUED -> PENDING -> DATA_RECEIVED -> IMPORTED,
  side exits REJECTED, FAILED, EXPIRED; FAILED can be retried (back to QUEUED);
- prior district (INBOUND): PENDING -> SENT -> COMPLETE, side exits REJECTED,
  FAILED; FAILED can be retried (back to PENDING). An approved request stays
  PENDING while its records are delivered: approval is the APPROVE action,
  which does not move the status.

``transition`` is the only place that decides whether an action is allowed.
Also here: a transfer's states (``TransferState``) and an outbox item's
(``OutboxStatus``), so that no status is a bare string anywhere else.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from rt_client.errors import InvalidInput, WrongStatus

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "Action",
    "Direction",
    "OutboxStatus",
    "Status",
    "TransferState",
    "Transition",
    "allowed_actions",
    "transition",
]


class Direction(enum.StrEnum):
    """Which side of a request this district is on."""

    OUTBOUND = "OUTBOUND"  # we asked for the records
    INBOUND = "INBOUND"  # we were asked


class Status(enum.StrEnum):
    """Request statuses; the names are those of ``common_pb2.RequestStatus``."""

    QUEUED = "QUEUED"
    PENDING = "PENDING"
    DATA_RECEIVED = "DATA_RECEIVED"
    IMPORTED = "IMPORTED"
    SENT = "SENT"
    COMPLETE = "COMPLETE"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"


class TransferState(enum.StrEnum):
    """Where a transfer's ciphertext is (the ``transfers.state`` column).

    OUTBOUND (we send): SEALING while the sealing attempt writes the spool,
    SEALED once all of it is there (never encrypted again). INBOUND (we
    receive): RECEIVING until the trailer verifies, then RECEIVED.
    """

    SEALING = "SEALING"
    SEALED = "SEALED"
    RECEIVING = "RECEIVING"
    RECEIVED = "RECEIVED"


class OutboxStatus(enum.StrEnum):
    """An outbox item's status: waiting to be sent, sent, or given up on."""

    QUEUED = "QUEUED"
    DONE = "DONE"
    FAILED = "FAILED"


class Action(enum.StrEnum):
    """What can happen to a request."""

    ACCEPT = "ACCEPT"  # OUTBOUND: the prior district acknowledged our request
    APPROVE = "APPROVE"  # the prior district approved (status unchanged)
    REJECT = "REJECT"  # the prior district said no
    RECEIVE_DATA = "RECEIVE_DATA"  # OUTBOUND: records arrived and verified
    IMPORT = "IMPORT"  # OUTBOUND: the registrar imported the records
    SEND = "SEND"  # INBOUND: records delivered, receipt verified
    COMPLETE = "COMPLETE"  # INBOUND: the requester reports the import
    FAIL = "FAIL"  # permanent error
    EXPIRE = "EXPIRE"  # OUTBOUND: no answer before the request expired
    RETRY = "RETRY"  # a registrar retries a failed request


@dataclass(frozen=True)
class Transition:
    """``action`` moves a request of ``direction`` from any of ``sources`` to ``target``."""

    sources: frozenset[Status]
    target: Status
    phrase: str  # completes "only X requests can ...", for the registrar


_Q, _P = Status.QUEUED, Status.PENDING


def _t(sources: tuple[Status, ...], target: Status, phrase: str) -> Transition:
    return Transition(frozenset(sources), target, phrase)


TRANSITIONS: Final[Mapping[Direction, Mapping[Action, Transition]]] = {
    Direction.OUTBOUND: {
        Action.ACCEPT: _t((_Q,), _P, "be accepted by the prior district"),
        # A decision may overtake the receipt of the request (receipt lost,
        # request re-sent): being approved also means being accepted.
        Action.APPROVE: _t((_Q, _P), _P, "be approved"),
        Action.REJECT: _t((_Q, _P), Status.REJECTED, "be rejected"),
        Action.RECEIVE_DATA: _t((_P,), Status.DATA_RECEIVED, "receive records"),
        Action.IMPORT: _t((Status.DATA_RECEIVED,), Status.IMPORTED, "be imported"),
        Action.FAIL: _t((_Q, _P), Status.FAILED, "be marked failed"),
        Action.EXPIRE: _t((_Q, _P), Status.EXPIRED, "expire"),
        Action.RETRY: _t((Status.FAILED,), _Q, "be retried"),
    },
    Direction.INBOUND: {
        Action.APPROVE: _t((_P,), _P, "be approved"),
        Action.REJECT: _t((_P,), Status.REJECTED, "be rejected"),
        Action.SEND: _t((_P,), Status.SENT, "be marked sent"),
        Action.COMPLETE: _t((Status.SENT,), Status.COMPLETE, "be completed"),
        Action.FAIL: _t((_P,), Status.FAILED, "be marked failed"),
        Action.RETRY: _t((Status.FAILED,), _P, "be retried"),
    },
}

# No action leads out of these.
TERMINAL: Final[Mapping[Direction, frozenset[Status]]] = {
    Direction.OUTBOUND: frozenset({Status.IMPORTED, Status.REJECTED, Status.EXPIRED}),
    Direction.INBOUND: frozenset({Status.COMPLETE, Status.REJECTED}),
}


def transition(current: str, action: str, direction: str) -> Status:
    """The status after ``action`` on a ``direction`` request now in ``current``.

    Raises ``WrongStatus`` with a message for the registrar (e.g. "request is
    IMPORTED; only DATA_RECEIVED requests can be imported") when the action is
    not allowed now, and ``InvalidInput`` for names that are not statuses,
    actions or directions at all.
    """
    try:
        side, act, status = Direction(direction), Action(action), Status(current)
    except ValueError:
        raise InvalidInput("unknown request status, action or direction") from None
    rule = TRANSITIONS[side].get(act)
    if rule is None:
        who = "we requested" if side is Direction.OUTBOUND else "we received"
        raise WrongStatus(f"a request {who} cannot {act.lower().replace('_', ' ')}")
    if status not in rule.sources:
        allowed = " or ".join(s.value for s in Status if s in rule.sources)
        raise WrongStatus(f"request is {status}; only {allowed} requests can {rule.phrase}")
    return rule.target


def allowed_actions(current: str, direction: str) -> tuple[Action, ...]:
    """The actions possible now, e.g. for what a CLI offers."""
    side, status = Direction(direction), Status(current)
    return tuple(a for a, rule in TRANSITIONS[side].items() if status in rule.sources)
