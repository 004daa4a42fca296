"""The values the core hands out: frozen dataclasses, never database rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from rt_server.core.statuses import Direction, Status

__all__ = [
    "DisclosureRecord",
    "RequestRecord",
    "StudentIdentity",
    "StudentRecord",
    "ThreadMessageRecord",
]


@dataclass(frozen=True)
class StudentRecord:
    """A student enrolled in (or known to) this district."""

    local_id: str
    ssid: str | None
    legal_first_name: str
    legal_middle_name: str | None
    legal_last_name: str
    birth_date: dt.date
    gender: str | None  # "M", "F" or "X"
    school: str | None  # CDS code of the current school
    created_at: dt.datetime

    @property
    def display_name(self) -> str:
        """ "Last, First Middle", as registrars list students."""
        given = " ".join(n for n in (self.legal_first_name, self.legal_middle_name) if n)
        return f"{self.legal_last_name}, {given}"


@dataclass(frozen=True)
class StudentIdentity:
    """Who a request is about, as the requester named the student (any part may be missing)."""

    ssid: str | None = None
    legal_first_name: str | None = None
    legal_middle_name: str | None = None
    legal_last_name: str | None = None
    birth_date: dt.date | None = None
    gender: str | None = None
    prior_local_id: str | None = None  # the prior district's id, if the requester knew it

    @property
    def display_name(self) -> str:
        given = " ".join(n for n in (self.legal_first_name, self.legal_middle_name) if n)
        return f"{self.legal_last_name or ''}, {given}".strip(", ")


@dataclass(frozen=True)
class RequestRecord:
    """One records request, from this district's side (``direction``)."""

    request_id: str
    direction: Direction
    status: Status
    status_reason: str | None
    other_district: str  # the district on the other side
    requesting_district: str
    requesting_school: str
    prior_district: str
    prior_school: str
    # The student as named in the request (the same names as the columns).
    ssid: str | None
    legal_first_name: str | None
    legal_middle_name: str | None
    legal_last_name: str | None
    birth_date: dt.date | None
    gender: str | None
    prior_local_id: str | None
    local_student_id: str | None  # OUTBOUND: ours; INBOUND: the confirmed match
    requested_by: str | None
    tables_requested: tuple[str, ...]  # table codes in transfer order
    approved: bool | None  # None: no decision yet
    tables_approved: tuple[str, ...]
    reject_reason: str | None  # a common_pb2.RejectReason name
    reject_text: str | None
    decision_id: str | None
    decided_by: str | None
    decided_at: dt.datetime | None
    transfer_id: str | None
    request_envelope: bytes
    decision_envelope: bytes | None
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: dt.datetime | None
    attempts: int
    next_attempt_at: dt.datetime | None
    delivery_bytes_total: int
    delivery_bytes_done: int
    # The law's clocks and duties (revision 0005; rt_server.core.due_dates).
    foster_youth: bool = False  # EC 49069.5, as the requester marked it
    discipline_requested: bool = False  # EC 48201(b)
    discipline_answer: str | None = None  # "SENT" / "NONE_ON_FILE"
    grades_withheld: bool = False  # EC 48904.3, as the decision said
    due_on: dt.date | None = None  # INBOUND: None while the schoolday clock waits
    due_rule: str | None = None
    due_note: str | None = None
    held_reason: str | None = None  # EC 49068.6: why approval is held
    received_at: dt.datetime | None = None  # INBOUND: when it reached us

    @property
    def student(self) -> StudentIdentity:
        """The requested student's identity, e.g. for ``matching.match_student``."""
        return StudentIdentity(
            ssid=self.ssid,
            legal_first_name=self.legal_first_name,
            legal_middle_name=self.legal_middle_name,
            legal_last_name=self.legal_last_name,
            birth_date=self.birth_date,
            gender=self.gender,
            prior_local_id=self.prior_local_id,
        )


@dataclass(frozen=True)
class DisclosureRecord:
    """One entry of the record of disclosures (34 CFR 99.32)."""

    id: int
    student_local_id: str
    student_name: str  # "Last, First Middle"
    receiving_district: str
    receiving_school: str
    tables: tuple[str, ...]
    disclosed_at: dt.datetime
    request_id: str
    legal_basis: str
    acting_staff: str
    # (table code, rows sent) of the tables sent; None: not recorded (before revision 0004).
    counts: tuple[tuple[str, int], ...] | None = None


@dataclass(frozen=True)
class ThreadMessageRecord:
    """One message of a request's thread; ``system`` ones log status changes locally."""

    message_id: str
    request_id: str
    from_district: str | None  # None: this district's own system message
    author: str
    body: str
    sent_at: dt.datetime
    system: bool
    delivered: bool
