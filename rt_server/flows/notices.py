"""Parent notices of disclosure and the parent's copy (34 CFR 99.34), for ``rt notices``.

The rows come from the store, the letters from ``core.letters``; this module
joins them and says, in a registrar's words, what is missing.
"""

from __future__ import annotations

import datetime as dt

from rt_client.errors import InvalidInput, NotFound
from rt_server.core.letters import (
    DisclosureFacts,
    disclosed_copy_csv,
    disclosed_copy_pdf,
    parent_notice_pdf,
)
from rt_server.core.model import DisclosureRecord
from rt_server.store import disclosures, parent_notices
from rt_server.store.parent_notices import ParentNotice
from rt_server.store.units import Database

__all__ = ["disclosed_copy", "letter", "mark_mailed", "owed_notices"]


def owed_notices(engine: Database, *, include_mailed: bool = False) -> list[ParentNotice]:
    return parent_notices.list_notices(engine, include_mailed=include_mailed)


def letter(engine: Database, district: str, notice_id: int, today: dt.date) -> bytes:
    """Notice ``notice_id`` as a PDF letter. Raises ``NotFound``."""
    notice = parent_notices.get_notice(engine, notice_id)
    return parent_notice_pdf(_facts(district, notice.id, notice.disclosure), today)


def mark_mailed(engine: Database, notice_id: int, actor: str, now: dt.datetime) -> ParentNotice:
    """Raises ``NotFound``, ``WrongStatus`` (already mailed: when and by whom)."""
    return parent_notices.mark_mailed(engine, notice_id, actor=actor, now=now)


def disclosed_copy(
    engine: Database,
    district: str,
    student_local_id: str,
    request_ref: str,
    fmt: str,
    today: dt.date,
) -> bytes:
    """The parent's copy of what one disclosure sent, as ``pdf`` or ``csv``.

    ``request_ref`` is the request id, or its first 8 or more characters.
    Raises ``NotFound`` (no such disclosure of this student), ``InvalidInput``.
    """
    if fmt not in ("pdf", "csv"):
        raise InvalidInput("the copy is made as pdf or csv")
    ref = request_ref.strip().lower()
    if len(ref) < 8 or len(ref) > 36 or not all(c in "0123456789abcdef-" for c in ref):
        raise InvalidInput("name the request by its id or its first 8 or more characters")
    found = [
        d
        for d in disclosures.list_disclosures(engine, student_local_id)
        if d.request_id.startswith(ref)
    ]
    if not found:
        raise NotFound(
            f"no disclosure of student {student_local_id} for request {request_ref} "
            "(see 'rt disclosures --student')"
        )
    disclosure = found[-1]
    facts = _facts(district, 0, disclosure)
    rows = parent_notices.disclosed_rows(engine, student_local_id, [c for c, _ in facts.counts])
    if fmt == "csv":
        return disclosed_copy_csv(facts, rows)
    return disclosed_copy_pdf(facts, rows, today)


def _facts(district: str, notice_id: int, d: DisclosureRecord) -> DisclosureFacts:
    counts = d.counts if d.counts is not None else tuple((t, 0) for t in d.tables)
    return DisclosureFacts(
        notice_id=notice_id,
        district=district,
        student_name=d.student_name,
        student_local_id=d.student_local_id,
        receiving_district=d.receiving_district,
        receiving_school=d.receiving_school,
        disclosed_at=d.disclosed_at,
        legal_basis=d.legal_basis,
        request_id=d.request_id,
        counts=counts,
    )
