"""Time-driven notices: due-date reminders, overdue notices, the daily digest.

Each pass of the mail worker asks which are due now (``core.due_dates.notices_due``
over the inbound requests still waiting) and queues those not queued yet: the
notice's dedupe key (kind, request, due date) makes each one queued, and so
sent, once, whichever replica or pass sees it first. With ``digest = true``
the reminders and overdue notices are gathered into one daily digest to the
records administrator instead (at ``digest_hour``, the district's local
time); notices about events (a new request, records arrived, a rejection, a
missing-child alert) always go at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from zoneinfo import ZoneInfo

from rt_client.mail_config import MailConfig
from rt_server.core.calendars import SchoolCalendar
from rt_server.core.due_dates import (
    DueDate,
    NoticeKind,
    OpenRequest,
    RequestFacts,
    due_date,
    local_day,
    notices_due,
    schooldays_left,
)
from rt_server.store import mail_outbox, notice_sources, units
from rt_server.store.units import Database

__all__ = ["Calendars", "ReminderSource", "queue_missing_child_alert"]

# The responding schools' calendars, by CDS code (none loaded: business days).
Calendars = Callable[[], Mapping[str, SchoolCalendar]]

_KIND: dict[NoticeKind, str] = {NoticeKind.REMINDER: "due_reminder", NoticeKind.OVERDUE: "overdue"}


def _no_calendars() -> Mapping[str, SchoolCalendar]:
    return {}


class ReminderSource:
    """The waiting requests with their due dates, and the notices they call for."""

    def __init__(self, engine: Database, mail: MailConfig, calendars: Calendars = _no_calendars):
        self._engine = engine
        self._mail = mail
        self._calendars = calendars

    def due_dates(self) -> list[tuple[notice_sources.WaitingRequest, DueDate]]:
        calendars = self._calendars()
        return [
            (
                w,
                due_date(
                    RequestFacts(
                        received_at=w.received_at,
                        school=w.prior_school,
                        foster_youth=w.foster_youth,
                        discipline_requested=w.discipline_requested,
                    ),
                    calendars.get(w.prior_school),
                ),
            )
            for w in notice_sources.waiting_inbound_requests(self._engine)
        ]

    def due_of(self, request_id: str) -> DueDate | None:
        for waiting, due in self.due_dates():
            if waiting.request_id == request_id:
                return due
        return None

    def queue_due(self, now: dt.datetime) -> int:
        """Queue the reminders, overdue notices or digest due at ``now``. Returns how many."""
        wanted: list[tuple[str, str, str | None]]
        if self._mail.digest:
            local = now.astimezone(ZoneInfo(self._mail.timezone))
            if local.hour < self._mail.digest_hour:
                return 0
            wanted = [("digest", f"digest:{local.date().isoformat()}", None)]
        else:
            opened = [
                OpenRequest(w.request_id, w.prior_school, d.due_on, d.rule)
                for w, d in self.due_dates()
            ]
            wanted = [
                (_KIND[n.kind], n.dedupe_key, n.request_id)
                for n in notices_due(opened, now, self._calendars())
            ]
        return mail_outbox.queue_missing(self._engine, wanted, now=now)

    def digest_lines(self, now: dt.datetime) -> list[str]:
        """One line per waiting request: short id, school, due date, rule, how close."""
        today = local_day(now)
        calendars = self._calendars()
        lines = []
        for waiting, due in self.due_dates():
            short = waiting.request_id[:8]
            if due.due_on is None:
                state = "clock waiting for the next school day"
            elif today > due.due_on:
                state = "OVERDUE"
            else:
                left = schooldays_left(today, due.due_on, calendars.get(waiting.prior_school))
                state = f"{left} school day(s) left"
            when = due.due_on.isoformat() if due.due_on else "-"
            lines.append(
                f"{short}  from district {waiting.requesting_district}  school "
                f"{waiting.prior_school}  due {when} ({due.rule})  {state}"
            )
        head = f"{len(lines)} records request(s) waiting for an answer."
        return [head, "", *lines] if lines else ["No records request is waiting for an answer."]


def queue_missing_child_alert(conn: units.Unit, request_id: str, now: dt.datetime) -> None:
    """EC 49068.6: alert the law-enforcement contact, in the transaction that holds the request."""
    mail_outbox.queue_notice(
        conn,
        kind="missing_child",
        dedupe_key=f"missing_child:{request_id}",
        request_id=request_id,
        now=now,
    )
