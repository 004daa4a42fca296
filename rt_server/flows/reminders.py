"""Time-driven notices and the due-date side's alerts, queued into the mail outbox.

Each pass of the mail worker:

- queues the reminders (a due date 3 schooldays away) and overdue notices due
  now (``flows.compliance.notices_due``: the due dates stored on each request,
  the schools' loaded calendars), each under its dedupe key (kind, request,
  due date), so each is queued, and sent, once, whichever replica or pass
  sees it first. With ``digest = true`` they are gathered instead into one
  daily digest to the records administrator, at ``digest_hour`` local time;
- adopts the notices the due-date side stores (``compliance_notices``: the
  EC 49068.6 missing-child alert), under the same key; they are marked sent
  there when the mail server took them.

Notices about events (a new request, records arrived, a rejection) are
queued by the events themselves (``store.mail_outbox``) and always go at once.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from rt_client.mail_config import MailConfig
from rt_server.core.due_dates import NoticeKind
from rt_server.core.model import RequestRecord
from rt_server.flows import compliance
from rt_server.flows.district import District
from rt_server.store import flags, mail_outbox, requests

__all__ = ["COMPLIANCE_PREFIX", "ReminderSource"]

_KIND: dict[NoticeKind, str] = {NoticeKind.REMINDER: "due_reminder", NoticeKind.OVERDUE: "overdue"}
# Our dedupe keys of the due-date side's stored notices: "compliance:<their key>".
COMPLIANCE_PREFIX = "compliance:"
_ADOPTED_KIND = {"MISSING_CHILD_ALERT": "missing_child"}


class ReminderSource:
    """What the mail worker reads of the district's clocks: due dates, alerts, the digest."""

    def __init__(self, d: District, mail: MailConfig) -> None:
        self._d = d
        self._mail = mail

    def queue_due(self, now: dt.datetime) -> int:
        """Queue what is due at ``now`` and not queued yet. Returns how many were new."""
        wanted: list[tuple[str, str, str | None]] = [
            (
                _ADOPTED_KIND.get(n.kind, n.kind.lower()),
                COMPLIANCE_PREFIX + n.dedupe_key,
                n.request_id,
            )
            for n in flags.notices(self._d.engine, unsent_only=True)
        ]
        if self._mail.digest:
            local = now.astimezone(ZoneInfo(self._mail.timezone))
            if local.hour >= self._mail.digest_hour:
                wanted.append(("digest", f"digest:{local.date().isoformat()}", None))
        else:
            wanted += [
                (_KIND[n.kind], n.dedupe_key, n.request_id) for n in compliance.notices_due(self._d)
            ]
        return mail_outbox.queue_missing(self._d.engine, wanted, now=now)

    def waiting(self, request_id: str) -> RequestRecord | None:
        """The request, if it still waits for an answer (a reminder about it still applies)."""
        for r in requests.unanswered_inbound(self._d.engine):
            if r.request_id == request_id:
                return r
        return None

    def adopted_detail(self, dedupe_key: str) -> str | None:
        """The due-date side's text of an adopted notice (no student data), or None."""
        if not dedupe_key.startswith(COMPLIANCE_PREFIX):
            return None
        key = dedupe_key[len(COMPLIANCE_PREFIX) :]
        for n in flags.notices(self._d.engine, unsent_only=False):
            if n.dedupe_key == key:
                return n.detail
        return None

    def mark_adopted_sent(self, dedupe_key: str) -> None:
        if dedupe_key.startswith(COMPLIANCE_PREFIX):
            compliance.notice_sent(self._d, dedupe_key[len(COMPLIANCE_PREFIX) :])

    def digest_lines(self) -> list[str]:
        """One line per request waiting for an answer: short id, school, due date, rule."""
        today, waiting = compliance.due_list(self._d)
        lines = []
        for r in waiting:
            if r.due_on is None:
                state = "clock waiting for the next school day"
            elif compliance.is_overdue(self._d, r):
                state = "OVERDUE"
            else:
                state = f"due in {(r.due_on - today).days} day(s)"
            when = r.due_on.isoformat() if r.due_on else "-"
            lines.append(
                f"{r.request_id[:8]}  from district {r.requesting_district}  school "
                f"{r.prior_school}  due {when} ({r.due_rule or 'EC 49068'})  {state}"
            )
        head = f"{len(lines)} records request(s) waiting for an answer."
        return [head, "", *lines] if lines else ["No records request is waiting for an answer."]
