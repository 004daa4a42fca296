"""The summer rush, in batches: many requests, approvals or imports in one call.

Each item is its own transaction, through the same flow a single call takes
(``requester.create_request``, ``responder.approve_request``,
``review.import_received_transfer``): a failed item changes nothing of its
own, leaves the items before it done and the items after it tried. Each item
ends in an ``ItemOutcome``: done, left for a person (``left``: not a case a
batch decides unseen), or failed (with the error's text and code, as the
single call would have answered).

The batches decide nothing a person should: ``approve_exact_matches`` approves
only a request whose SSID, birth date and legal first and last names are our
student's (``matching.exact_match``); ``import_all_new`` imports only a
transfer whose every row is NEW.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from protos.rt.v1 import common_pb2
from rt_client.errors import RecordsTransferError
from rt_client.ids import RequestId
from rt_client.status_codes import status_for
from rt_server.core import matching
from rt_server.core.statuses import Direction, Status
from rt_server.flows import lookups, requester, responder, review
from rt_server.flows.district import DatabaseFailure, District
from rt_server.store import requests

__all__ = [
    "CreateItem",
    "ItemOutcome",
    "approve_exact_matches",
    "create_requests",
    "import_all_new",
]

log = logging.getLogger("rt_server.batches")

Outcome = Literal["done", "left", "failed"]

_DATABASE_FAILED = (
    "the district database could not complete this item (busy, full or unreachable); "
    "nothing of it was changed. Run the batch again for what is left"
)
_UNEXPECTED = "an unexpected error (logged at the district server); nothing of it was changed"


@dataclass(frozen=True)
class ItemOutcome:
    label: str
    outcome: Outcome
    message: str
    request_id: str = ""
    student_local_id: str = ""
    error_code: str = ""  # failed: the status code's name, lower case ("not_found")


@dataclass(frozen=True)
class CreateItem:
    """One request to make (one line of ``rt request create --from-csv``)."""

    label: str
    student_local_id: str
    prior_school: str
    prior_local_id: str = ""
    tables: Sequence[common_pb2.TableCode.ValueType] = ()
    # The student's demographics (keys of ``registrar_pb2.Student``): enroll them
    # first, in the same transaction, if no student has ``student_local_id``.
    enroll: Mapping[str, Any] | None = None


def _attempt(
    label: str, request_id: str, step: Callable[[], ItemOutcome], student: str = ""
) -> ItemOutcome:
    """``step()``, or the item failed: what went wrong, for a registrar (never a traceback)."""
    try:
        return step()
    except RecordsTransferError as exc:
        code, message = status_for(exc).name.lower(), exc.diagnostics()
    except DatabaseFailure as exc:
        log.warning("batch item %s: the database could not complete it: %s", label, exc.orig)
        code, message = "unavailable", _DATABASE_FAILED
    except Exception:
        log.exception("batch item %s failed unexpectedly", label)
        code, message = "internal", _UNEXPECTED
    return ItemOutcome(label, "failed", message, request_id, student, error_code=code)


def create_requests(d: District, items: Sequence[CreateItem], actor: str) -> list[ItemOutcome]:
    """Create (and send at once) one request per item, as ``CreateRequest`` does."""

    def create(item: CreateItem) -> ItemOutcome:
        request = functools.partial(
            requester.create_request,
            d,
            student_local_id=item.student_local_id,
            prior_school=item.prior_school,
            prior_local_id=item.prior_local_id,
            tables=item.tables,
            actor=actor,
        )
        enrolled = False
        if item.enroll is None:
            request_id = request()
        else:
            with d.writing() as unit:  # the enrollment and the request, together
                values = {**item.enroll, "local_id": item.student_local_id}
                enrolled = lookups.enroll_if_absent(d, unit, values, actor=actor)
                request_id = request(unit=unit)
        try:
            requester.send_now(d, request_id)
        except Exception:  # it is queued: the delivery worker sends it
            log.exception(
                "batch item %s: sending request %s at once failed", item.label, request_id
            )
        status = requests.get_request(d.engine, request_id).status
        where = ("enrolled; " if enrolled else "") + f"requested from school {item.prior_school}"
        note = where + (
            "; the prior district has it"
            if status is Status.PENDING
            else "; queued, sent when the prior district answers"
        )
        return ItemOutcome(item.label, "done", note, request_id, item.student_local_id)

    return [
        _attempt(item.label, "", functools.partial(create, item), item.student_local_id)
        for item in items
    ]


def approve_exact_matches(d: District, actor: str) -> list[ItemOutcome]:
    """Approve every undecided PENDING inbound request whose student matches exactly.

    The others are ``left``, saying why (no SSID, no such SSID here, a birth
    date or name that differs): a person confirms them with ``rt match``.
    """

    def approve(request_id: RequestId) -> ItemOutcome:
        candidates = responder.match_candidates(d, request_id)
        row = requests.get_request(d.engine, request_id)
        identity = matching.StudentIdentity(
            ssid=row.ssid,
            legal_first_name=row.legal_first_name,
            legal_last_name=row.legal_last_name,
            birth_date=row.birth_date,
        )
        found = matching.exact_match(identity, candidates)
        if isinstance(found, str):
            why = f"left for a person: {found}; see 'rt match'"
            return ItemOutcome(request_id, "left", why, request_id)
        responder.approve_request(
            d, request_id=request_id, student_local_id=found.local_id, tables=(), actor=actor
        )
        note = "approved: SSID, birth date and name match; the records are on their way"
        return ItemOutcome(request_id, "done", note, request_id, found.local_id)

    work = requests.ids_awaiting(d.engine, Direction.INBOUND, Status.PENDING, undecided=True)
    return [_attempt(i, i, functools.partial(approve, i)) for i in work]


def import_all_new(d: District, actor: str) -> list[ItemOutcome]:
    """Import every received transfer (DATA_RECEIVED) whose rows are all NEW.

    A transfer with a duplicate or conflicting row is ``left`` for review
    (``rt review``, then ``rt import``).
    """

    def import_one(request_id: RequestId) -> ItemOutcome:
        try:
            result = review.import_received_transfer(
                d,
                request_id=request_id,
                accept=frozenset(),
                keep_both=frozenset(),
                actor=actor,
                all_new_only=True,
            )
        except review.NotAllNew:
            return left_for_review(request_id)
        row = requests.get_request(d.engine, request_id)
        imported = sum(result.imported.values())
        note = "imported already" if result.already_imported else f"imported {imported} row(s)"
        return ItemOutcome(request_id, "done", note, request_id, row.local_student_id or "")

    def left_for_review(request_id: RequestId) -> ItemOutcome:
        """Say what the registrar will find in the review (only these transfers are reviewed)."""
        row, by_table = review.review_transfer(d, request_id)
        rows = [r for classified in by_table.values() for r in classified]
        duplicates = sum(1 for r in rows if str(r.row_class) == "DUPLICATE")
        conflicts = sum(1 for r in rows if str(r.row_class) == "CONFLICT")
        why = (
            f"left for review: {duplicates} duplicate and {conflicts} conflicting "
            f"row(s); see 'rt review {request_id[:8]} --rows'"
        )
        return ItemOutcome(request_id, "left", why, request_id, row.local_student_id or "")

    work = requests.ids_awaiting(d.engine, Direction.OUTBOUND, Status.DATA_RECEIVED)
    return [_attempt(i, i, functools.partial(import_one, i)) for i in work]
