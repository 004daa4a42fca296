"""What a registrar looks up, and enrolling a student: the registrar service's way into the store.

Nothing here changes a request: these are the reads behind ``rt student list``,
``rt requests``, ``rt show`` (with what its outbox still has to send),
``rt disclosures`` and a request's thread (and the request a registrar names
by a prefix of its id), and the writes that start every
flow on the requesting side (DESIGN.md section 4, step 1: the registrar
enrolls the student locally, corrects their demographics, adds the records
we hold). They go through this floor so that
the servicers call only the flows, as every other call does.

A student is enrolled at one of OUR schools: those of our own directory entry
(the registry's current one; our enrollment's copy while the registry cannot
be reached). A school of another district, or one the registry does not list
for us, is refused. Another student with the same name and birth date is
likely the same person: the registrar is warned (the enrolment still happens:
namesakes born the same day exist); the same SSID is refused by the store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from protos.rt.v1 import common_pb2, records_pb2
from rt_client.errors import InvalidInput, NotFound, PeerUnavailable, RegistryError
from rt_client.ids import RequestId, TransferId, district_of_school, parse_school_code
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
from rt_server.store import (
    audit,
    disclosures,
    replaced_rows,
    requests,
    students,
    thread_messages,
    units,
)
from rt_server.store.outbox import PendingSend, pending_sends_of

# The student fields a registrar may correct (``edit_student``).
EDITABLE_FIELDS = students.EDITABLE_FIELDS

__all__ = [
    "StudentDetail",
    "add_student_records",
    "audit_log",
    "correct_student",
    "disclosures_of",
    "enroll_student",
    "student_detail",
    "find_requests",
    "find_students",
    "pending_sends",
    "received_counts",
    "request",
    "resolve_request_ref",
    "short_request_ids",
    "student",
    "thread_of",
]

_LOCAL_ID_SHAPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}")  # as core.inputs checks


@dataclass(frozen=True)
class StudentDetail:
    """One student as ``rt student show`` shows them."""

    student: StudentRecord
    rows: Mapping[str, int]  # table code -> rows held
    replaced: list[replaced_rows.ReplacedRow]  # old versions of rows an import replaced


def enroll_student(
    d: District,
    values: Mapping[str, Any],
    batches: Iterable[records_pb2.RecordBatch],
    *,
    actor: str,
) -> tuple[StudentRecord, list[str]]:
    """Enroll a student, with any records we already hold: (the student, warnings).

    Raises ``InvalidInput`` (a bad field or row, a school not ours), ``Duplicate``.
    """
    if values.get("school"):
        _require_our_school(d, values["school"])
    local_id = students.add_student(d.engine, values, batches, actor=actor, now=d.clock())
    return students.get_student(d.engine, local_id), _duplicate_warnings(d, local_id)


def enroll_if_absent(
    d: District, unit: units.Unit, values: Mapping[str, Any], *, actor: str
) -> bool:
    """Enroll a student (no records) in ``unit`` unless one has ``values["local_id"]``.

    Returns whether it enrolled them. Raises as ``enroll_student`` does.
    """
    if students.is_enrolled(unit, str(values.get("local_id") or "")):
        return False
    if values.get("school"):
        _require_our_school(d, values["school"])
    students.add_student(unit, values, (), actor=actor, now=d.clock())
    return True


def correct_student(
    d: District,
    local_id: str,
    changes: Mapping[str, Any],
    clear: Iterable[str],
    *,
    actor: str,
) -> tuple[StudentRecord, list[str]]:
    """Correct a student's demographics (audited): (the student, warnings).

    Raises ``NotFound``, ``InvalidInput`` (a bad field, a school not ours), ``Duplicate``.
    """
    if changes.get("school"):
        _require_our_school(d, changes["school"])
    changed = students.edit_student(d.engine, local_id, changes, clear, actor=actor, now=d.clock())
    warnings = [] if not changed else _duplicate_warnings(d, local_id)
    if not changed:
        warnings.append("nothing changed: the student already had these values")
    return students.get_student(d.engine, local_id), warnings


def add_student_records(
    d: District, local_id: str, batches: Iterable[records_pb2.RecordBatch], *, actor: str
) -> StudentDetail:
    """Add records to one of our students. Raises ``NotFound``, ``InvalidInput``."""
    students.add_records(d.engine, local_id, batches, actor=actor, now=d.clock())
    return student_detail(d, local_id)


def student_detail(d: District, local_id: str, actor: str = "unknown") -> StudentDetail:
    """The student, the rows we hold per table, replaced row versions. Raises ``NotFound``.

    The viewing is recorded for the student's access log (EC 49064).
    """
    record = students.get_student(d.engine, local_id)
    record_view(d, actor, "student.view", local_id)
    return StudentDetail(
        record,
        students.row_counts(d.engine, local_id),
        replaced_rows.list_replaced_rows(d.engine, local_id),
    )


def _duplicate_warnings(d: District, local_id: str) -> list[str]:
    others = students.likely_duplicates(d.engine, local_id)
    if not others:
        return []
    return [
        f"another student has the same name and birth date ({', '.join(others)}): if it is "
        f"the same person, keep one ('rt student show {others[0]}'); namesakes born the same "
        "day do exist"
    ]


def _our_schools(d: District) -> dict[str, str]:
    """Our schools (CDS code -> name): our current directory entry's, else our enrollment's."""
    try:
        return {s.cds_code: s.name for s in d.directory.lookup(d.code).schools}
    except (PeerUnavailable, RegistryError):
        # The registry is down (or says something odd about us): the schools it
        # signed for us at enrollment are ours still.
        entry = common_pb2.DirectoryEntry.FromString(d.identity.entry.body)
        return {s.cds_code: s.name for s in entry.schools}


def _require_our_school(d: District, value: object) -> None:
    """Raises ``InvalidInput`` unless ``value`` is the CDS code of one of our schools."""
    if not isinstance(value, str):
        raise InvalidInput("school must be a CDS code")
    school = parse_school_code(value.strip())
    ours = _our_schools(d)
    if school in ours:
        return
    listed = "; ".join(f"{code} {name}" for code, name in sorted(ours.items())) or "none"
    owner = district_of_school(school)
    if owner != d.code:
        raise InvalidInput(
            f"school {school} belongs to district {owner}, not to this district ({d.code}): "
            f"a student is enrolled at one of our schools ({listed})"
        )
    raise InvalidInput(
        f"school {school} is not one of this district's registered schools ({listed}); "
        "if it is a new school of ours, ask the registry operator to add it"
    )


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


def pending_sends(d: District, request_id: RequestId) -> list[PendingSend]:
    """What the request still has to send the other district: why each waits, until when."""
    return pending_sends_of(d.engine, request_id, d.clock())


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


def record_view(
    d: District,
    actor: str,
    action: str,
    student_local_id: str | None,
    request_id: RequestId | None = None,
) -> None:
    """EC 49064: who viewed a student's records, when, through which view (the audit log)."""
    if student_local_id is None:
        return
    audit.write_audit(
        d.engine,
        actor=actor,
        action=action,
        request_id=request_id,
        student_local_id=student_local_id,
        now=d.clock(),
    )


AUDIT_LIMIT: Final = 1000


def audit_log(d: District, limit: int, request_id: RequestId | None) -> list[audit.AuditEntry]:
    """The audit log, newest first: at most ``limit`` entries (200 if 0, never over 1000)."""
    return audit.list_audit(d.engine, min(limit or 200, AUDIT_LIMIT), request_id)
