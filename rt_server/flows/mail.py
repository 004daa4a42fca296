"""The mail worker of ``rt serve``: sends the queued notices over SMTP with STARTTLS.

Notices are queued in the database by the event that causes them
(``rt_server.store.mail_outbox``), so a mail server that is down loses
nothing: each notice waits, retried with a delay doubling from
``retry_base_seconds`` up to ``retry_max_seconds``, until the server takes it
or ``give_up_hours`` pass (then FAILED, and logged). A notice is marked SENT
durably as soon as the SMTP server accepted it; only a crash in between those
two steps can send it again, and then with the same ``Message-ID``, so the
recipient's mail system shows one.

The connection always upgrades with STARTTLS (RFC 3207) and verifies the
server's certificate and host name against ``ca_file`` (or the system's
CAs); a server that does not offer STARTTLS is an error, never a plaintext
send (unless ``starttls = false`` for a relay on localhost).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import smtplib
import ssl
import threading
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Final

from rt_client.errors import ConfigError, NotFound
from rt_client.ids import RequestId
from rt_client.mail_config import MailConfig
from rt_server.core.notices import NoticeFacts, Recipients, recipients_of, render_notice
from rt_server.flows.district import District
from rt_server.flows.reminders import ReminderSource
from rt_server.store import mail_outbox, requests
from rt_server.store.units import Database

__all__ = ["MailWorker", "SmtpSender", "facts_of"]

log = logging.getLogger("rt_server.mail")

_LEASE: Final = dt.timedelta(minutes=5)


class SmtpSender:
    """Sends one message over a fresh SMTP connection (notices are few; no pooling)."""

    def __init__(self, config: MailConfig) -> None:
        self._config = config

    def send(self, message: EmailMessage) -> None:
        """Raises ``smtplib.SMTPException``, ``OSError`` (``ssl.SSLError``), ``ConfigError``."""
        c = self._config
        with smtplib.SMTP(c.host, c.port, timeout=c.timeout_seconds) as smtp:
            smtp.ehlo()
            if c.starttls:
                if not smtp.has_extn("starttls"):
                    raise smtplib.SMTPNotSupportedError(
                        f"the mail server {c.host}:{c.port} does not offer STARTTLS; "
                        "refusing to send in plaintext"
                    )
                context = ssl.create_default_context(
                    cafile=str(c.ca_file) if c.ca_file is not None else None
                )
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                smtp.starttls(context=context)
                smtp.ehlo()
            password = c.password()
            if password is not None:
                smtp.login(c.username, password)
            smtp.send_message(message)


class MailWorker:
    """A thread that sends due notices; ``run_once`` is one pass (tests call it)."""

    def __init__(
        self,
        d: District,
        config: MailConfig,
        *,
        sender: SmtpSender | None = None,
        poll_seconds: float = 5.0,
    ) -> None:
        self._d = d
        self._engine = d.engine
        self._district = d.code
        self._config = config
        self._clock = d.clock
        self._sender = sender or SmtpSender(config)
        self._poll = poll_seconds
        # Queues the time-driven notices (reminders, overdue, digest, alerts) on each pass.
        self._reminders = ReminderSource(d, config)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._recipients = Recipients(
            schools=config.schools,
            staff=config.staff,
            records_administrator=config.records_administrator,
            law_enforcement=d.law_enforcement_contact,
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mail", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the worker must outlive a bad pass (database busy, ...)
                log.exception("mail worker pass failed; trying again shortly")
            self._wake.wait(self._poll)
            self._wake.clear()

    def run_once(self) -> int:
        """Send what is due now. Returns how many notices the mail server accepted."""
        now = self._clock()
        self._reminders.queue_due(now)
        sent = 0
        for notice in mail_outbox.claim_due(self._engine, now=now, lease=_LEASE):
            if self._stop.is_set():
                break
            sent += self._send_one(notice, now)
        return sent

    def _send_one(self, notice: mail_outbox.MailNotice, now: dt.datetime) -> int:
        age = now - notice.created_at
        try:
            facts = facts_of(self._engine, self._district, notice)
        except NotFound:
            mail_outbox.mark_failed(self._engine, notice.id, error="its request no longer exists")
            return 0
        if notice.kind in ("due_reminder", "overdue"):
            waiting = self._reminders.waiting(facts.request_id or "")
            if waiting is None:
                # Answered between the pass that queued it and this one: no reminder.
                mail_outbox.mark_failed(
                    self._engine, notice.id, error="not sent: the request was answered first"
                )
                return 0
            facts = dataclasses.replace(
                facts, due=waiting.due_on, rule=waiting.due_rule or "EC 49068"
            )
        elif notice.kind == "digest":
            facts = dataclasses.replace(facts, lines=tuple(self._reminders.digest_lines()))
        else:
            detail = self._reminders.adopted_detail(notice.dedupe_key)
            if detail is not None:
                facts = dataclasses.replace(facts, lines=(detail,))
        to = recipients_of(facts, self._recipients)
        subject, body = render_notice(facts, self._config.console_url)
        message = EmailMessage()
        message["From"] = self._config.from_address
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message["Date"] = format_datetime(now)
        message["Message-ID"] = _message_id(notice.dedupe_key, self._district)
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
        message.set_content(body)
        try:
            self._sender.send(message)
        except (smtplib.SMTPException, OSError, ConfigError) as exc:
            error = _describe(exc)
            if age >= dt.timedelta(hours=self._config.give_up_hours):
                log.error(
                    "mail notice %s (%s) given up after %d attempts: %s",
                    notice.id,
                    notice.kind,
                    notice.attempts + 1,
                    error,
                )
                mail_outbox.mark_failed(self._engine, notice.id, error=error)
                return 0
            delay = min(
                self._config.retry_base_seconds * 2 ** min(notice.attempts, 20),
                self._config.retry_max_seconds,
            )
            log.warning(
                "mail notice %s (%s) not sent (%s); next attempt in %.0f s",
                notice.id,
                notice.kind,
                error,
                delay,
            )
            mail_outbox.reschedule(
                self._engine, notice.id, error=error, at=now + dt.timedelta(seconds=delay)
            )
            return 0
        mail_outbox.mark_sent(self._engine, notice.id, now=now)
        self._reminders.mark_adopted_sent(notice.dedupe_key)
        log.info("mail notice %s (%s) sent to %d recipient(s)", notice.id, notice.kind, len(to))
        return 1


def facts_of(engine: Database, district: str, notice: mail_outbox.MailNotice) -> NoticeFacts:
    """What the notice may say, read now from its request. Raises ``NotFound``."""
    if notice.request_id is None:
        return NoticeFacts(kind=notice.kind, request_id=None, district=district)
    r = requests.get_request(engine, RequestId(notice.request_id))
    return NoticeFacts(
        kind=notice.kind,
        request_id=r.request_id,
        district=district,
        other_district=r.other_district,
        requesting_school=r.requesting_school,
        prior_school=r.prior_school,
        requested_by=r.requested_by or "",
        reject_reason=r.reject_reason or "",
    )


def _message_id(dedupe_key: str, district: str) -> str:
    # The same notice always has the same Message-ID: a resend after a crash is one message.
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:32]
    return f"<{digest}@{district}.records-transfer.invalid>"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the mail server's certificate did not verify ({exc.verify_message})"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return "the mail server refused the login (mail.username / password)"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the mail server answered {exc.smtp_code}"
    if isinstance(exc, ConnectionRefusedError):
        return "the mail server refused the connection (is it running?)"
    if isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException):
        return f"the mail server could not be reached ({exc.strerror or type(exc).__name__})"
    return str(exc)[:300] or type(exc).__name__
