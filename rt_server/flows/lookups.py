"""What a registrar looks up, and enrolling a student: the registrar service's way into the store.

Nothing here changes a request: these are the reads behind ``rt student list``,
``rt requests``, ``rt show`` (with what its outbox still has to send),
``rt disclosures`` and a request's thread, and the one write that starts every
flow on the requesting side (DESIGN.md section 4, step 1: the registrar enrolls
the student locally). They go through this floor so that the servicers call
only the flows, as every other call does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from protos.rt.v1 import records_pb2
from rt_client.ids import RequestId, TransferId
from rt_server.core.model import (
    DisclosureRecord,
    RequestRecord,
    StudentRecord,
    ThreadMessageRecord,
)
from rt_server.core.statuses import Direction, Status
from rt_server.flows.district import District
from rt_server.store import disclosures, requests, students, thread_messages
from rt_server.store.outbox import PendingSend, pending_sends_of

__all__ = [
    "disclosures_of",
    "enroll_student",
    "find_requests",
    "find_students",
    "pending_sends",
    "received_counts",
    "request",
    "student",
    "thread_of",
]


def enroll_student(
    d: District,
    values: Mapping[str, Any],
    batches: Iterable[records_pb2.RecordBatch],
    *,
    actor: str,
) -> StudentRecord:
    """Enroll a student, with any records we already hold. Raises ``InvalidInput``."""
    local_id = students.add_student(d.engine, values, batches, actor=actor, now=d.clock())
    return students.get_student(d.engine, local_id)


def student(d: District, local_id: str) -> StudentRecord:
    """Our student ``local_id``. Raises ``NotFound``."""
    return students.get_student(d.engine, local_id)


def find_students(d: District, query: str, limit: int) -> list[StudentRecord]:
    """Our students by local id, SSID or the start of a name. Raises ``InvalidInput``."""
    return students.list_students(d.engine, query, limit)


def request(d: District, request_id: RequestId) -> RequestRecord:
    """The request ``request_id``, either direction. Raises ``NotFound``."""
    return requests.get_request(d.engine, request_id)


def find_requests(
    d: District,
    direction: Direction | str | None,
    status: Status | str | None,
    limit: int,
) -> list[RequestRecord]:
    """Requests, newest first, of one direction and/or status (None: any)."""
    return requests.list_requests(d.engine, direction=direction, status=status, limit=limit)


def received_counts(d: District, transfer_id: TransferId) -> str:
    """The row counts a transfer announced, as stored ("TST=120,HIS=64"; "" if none)."""
    return requests.received_counts(d.engine, transfer_id)


def pending_sends(d: District, request_id: RequestId) -> list[PendingSend]:
    """What the request still has to send the other district: why each waits, until when."""
    return pending_sends_of(d.engine, request_id, d.clock())


def disclosures_of(d: District, student_local_id: str | None) -> list[DisclosureRecord]:
    """The record of disclosures (34 CFR 99.32) of one student, or of all (None)."""
    return disclosures.list_disclosures(d.engine, student_local_id)


def thread_of(d: District, request_id: RequestId) -> list[ThreadMessageRecord]:
    """A request's thread, oldest first. Raises ``NotFound``."""
    return thread_messages.list_messages(d.engine, request_id)
