"""What a registrar looks up, and enrolling a student: the registrar service's way into the store.

Nothing here changes a request: these are the reads behind ``rt student list``,
``rt requests``, ``rt show``, ``rt disclosures`` and a request's thread (and
the request a registrar names by a prefix of its id), and
the one write that starts every flow on the requesting side (DESIGN.md section
4, step 1: the registrar enrolls the student locally). They go through this
floor so that the servicers call only the flows, as every other call does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from protos.rt.v1 import records_pb2
from rt_client.errors import InvalidInput, NotFound
from rt_client.ids import RequestId, TransferId
from rt_client.request_refs import (
    MIN_PREFIX,
    is_full_request_id,
    parse_request_ref,
    request_not_found,
    shortest_unique_prefix,
)
from rt_server.core.model import (
    DisclosureRecord,
    RequestRecord,
    StudentRecord,
    ThreadMessageRecord,
)
from rt_server.core.statuses import Direction, Status
from rt_server.flows.district import District
from rt_server.store import disclosures, requests, students, thread_messages

__all__ = [
    "disclosures_of",
    "enroll_student",
    "find_requests",
    "find_students",
    "received_counts",
    "request",
    "resolve_request_ref",
    "short_request_ids",
    "student",
    "thread_of",
]

_LOCAL_ID_SHAPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}")  # as core.inputs checks


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


def resolve_request_ref(d: District, value: str) -> RequestId:
    """The request a registrar names by its id or a unique prefix of it (8 or more characters).

    A whole id is returned as it is (the command then says if we hold no such
    request). Raises ``InvalidInput`` (not a request id, too short, or a prefix
    of several requests: their short ids are named) or ``NotFound``.
    """
    ref = parse_request_ref(value)
    if is_full_request_id(ref):
        return RequestId(ref)
    shown = 5
    found = requests.ids_starting_with(d.engine, ref, limit=shown + 1)
    if not found:
        raise request_not_found(ref)
    if len(found) > 1:
        shorts = short_request_ids(d, found[:shown])
        names = ", ".join(shorts[i] for i in found[:shown])
        more = " and more" if len(found) > shown else ""
        raise InvalidInput(
            f"request id {ref} is ambiguous: it starts the requests {names}{more}; "
            "type more of the id"
        )
    return RequestId(found[0])


def short_request_ids(d: District, request_ids: Iterable[str]) -> dict[str, str]:
    """Each request id's shortest prefix (8 characters or more) no other request here starts."""
    ids = list(dict.fromkeys(request_ids))
    starts = {i[:MIN_PREFIX] for i in ids}
    sharing: dict[str, list[str]] = {}
    for other in requests.ids_sharing_start(d.engine, starts):
        sharing.setdefault(other[:MIN_PREFIX], []).append(other)
    return {i: shortest_unique_prefix(i, sharing.get(i[:MIN_PREFIX], ())) for i in ids}


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


def disclosures_of(d: District, student_local_id: str | None) -> list[DisclosureRecord]:
    """The record of disclosures (34 CFR 99.32) of one student, or of all (None).

    Raises ``NotFound`` for a student we do not hold (not an empty record).
    """
    if student_local_id is not None:
        try:
            students.get_student(d.engine, student_local_id)
        except NotFound:
            shown = (
                student_local_id if _LOCAL_ID_SHAPE.fullmatch(student_local_id) else "with this id"
            )
            raise NotFound(
                f"no student {shown} here ('rt student list' lists this district's students)"
            ) from None
    return disclosures.list_disclosures(d.engine, student_local_id)


def thread_of(d: District, request_id: RequestId) -> list[ThreadMessageRecord]:
    """A request's thread, oldest first. Raises ``NotFound``."""
    return thread_messages.list_messages(d.engine, request_id)
