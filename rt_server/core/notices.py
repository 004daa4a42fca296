"""What each e-mail notice says, and to whom it goes: pure, from ids and codes only.

A notice carries no student data (no name, SSID, birth date or record value):
e-mail crosses servers the district does not control. It names the request
(its short id and full id), the schools and districts by code, the date that
matters, and the command (or console link) where the registrar, signed in,
sees the rest. This is the "minimum necessary" reading of FERPA's
reasonable-methods duty (34 CFR 99.31(a)(1)(ii)) applied to mail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["NoticeFacts", "Recipients", "RenderedNotice", "recipients_of", "render_notice"]

# Role of the recipient of each kind of notice.
SCHOOL_LIST: Final = "school_list"
REQUESTER: Final = "requester"
RECORDS_ADMIN: Final = "records_administrator"
LAW_ENFORCEMENT: Final = "law_enforcement"

ROLE_OF_KIND: Final[Mapping[str, str]] = {
    "new_inbound": SCHOOL_LIST,
    "records_arrived": REQUESTER,
    "request_rejected": REQUESTER,
    "due_reminder": SCHOOL_LIST,
    "overdue": RECORDS_ADMIN,
    "missing_child": LAW_ENFORCEMENT,
    "digest": RECORDS_ADMIN,
}


@dataclass(frozen=True)
class NoticeFacts:
    """What a notice may say about its request: ids, codes, dates; never the student."""

    kind: str
    request_id: str | None
    district: str  # ours
    other_district: str = ""
    requesting_school: str = ""
    prior_school: str = ""
    requested_by: str = ""
    due: dt.date | None = None
    rule: str = ""  # the statute that set the due date, e.g. "EC 49068"
    reject_reason: str = ""
    lines: Sequence[str] = ()  # a digest's lines (already free of student data)


@dataclass(frozen=True)
class Recipients:
    """The district's notice addresses, from ``[mail]`` (rt_client.mail_config)."""

    schools: Mapping[str, Sequence[str]]
    staff: Mapping[str, str]
    records_administrator: str
    law_enforcement: str


@dataclass(frozen=True)
class RenderedNotice:
    to: tuple[str, ...]
    subject: str
    body: str


def recipients_of(facts: NoticeFacts, rcpt: Recipients) -> tuple[str, ...]:
    """Who gets a notice. A school with no list, or a requester with no address,
    falls back to the records administrator: a notice is never dropped for want of one."""
    role = ROLE_OF_KIND.get(facts.kind, RECORDS_ADMIN)
    if role == SCHOOL_LIST:
        school = facts.prior_school if facts.kind == "new_inbound" else _our_school(facts)
        listed = tuple(rcpt.schools.get(school, ()))
        return listed or (rcpt.records_administrator,)
    if role == REQUESTER:
        address = rcpt.staff.get(facts.requested_by)
        if address:
            return (address,)
        listed = tuple(rcpt.schools.get(facts.requesting_school, ()))
        return listed or (rcpt.records_administrator,)
    if role == LAW_ENFORCEMENT:
        return (rcpt.law_enforcement,) if rcpt.law_enforcement else (rcpt.records_administrator,)
    return (rcpt.records_administrator,)


def _our_school(facts: NoticeFacts) -> str:
    # Reminders are for requests we answer: our school is the prior school.
    return facts.prior_school


def render_notice(facts: NoticeFacts, console_url: str = "") -> tuple[str, str]:
    """The subject and body of a notice. Raises ``KeyError`` for an unknown kind."""
    short = (facts.request_id or "")[:8]
    see = ""
    if facts.request_id:
        see = f"\n\nSee it with:  rt show {facts.request_id}"
        if console_url:
            see += f"\nor in the console: {console_url.rstrip('/')}/requests/{facts.request_id}"
    due = f" (due {facts.due.isoformat()}, {facts.rule})" if facts.due else ""
    texts: dict[str, tuple[str, str]] = {
        "new_inbound": (
            f"Records request {short} received from district {facts.other_district}",
            f"District {facts.other_district} (school {facts.requesting_school}) asks for the "
            f"records of a student of school {facts.prior_school}.{due} It awaits a decision: "
            "rt match, then rt approve or rt reject.",
        ),
        "records_arrived": (
            f"Records arrived for request {short}",
            f"District {facts.other_district} sent the records you requested (request "
            f"{short}, school {facts.requesting_school}). Review and import them: rt review, "
            "rt import.",
        ),
        "request_rejected": (
            f"Request {short} was rejected by district {facts.other_district}",
            f"District {facts.other_district} rejected records request {short}"
            + (f" ({facts.reject_reason})" if facts.reject_reason else "")
            + ". The reason they gave is in the request's thread.",
        ),
        "due_reminder": (
            f"Reminder: request {short} is due {facts.due.isoformat() if facts.due else ''}",
            f"Records request {short} from district {facts.other_district} is due in 3 "
            f"school days{due} and has not been answered.",
        ),
        "overdue": (
            f"OVERDUE: records request {short}",
            f"Records request {short} from district {facts.other_district} (school "
            f"{facts.prior_school}) is past its due date{due} and has not been answered.",
        ),
        "missing_child": (
            f"Records request for a student flagged missing (request {short})",
            f"District {facts.other_district} (school {facts.requesting_school}) requested the "
            "records of a student this district has flagged as missing (EC 49068.6). The "
            "approval is held.\n\n"
            + "\n".join(facts.lines)
            + "\n\nContact the district's records administrator for the student's details.",
        ),
        "digest": (
            f"Records Transfer daily digest, district {facts.district}",
            "\n".join(facts.lines) or "Nothing is waiting.",
        ),
    }
    subject, body = texts[facts.kind]
    footer = (
        f"\n\n-- \nRecords Transfer, district {facts.district}. This notice holds no student "
        "data by design; sign in to see the request."
    )
    return subject, body + see + footer
