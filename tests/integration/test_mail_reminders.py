"""Due-date reminders, overdue notices and the daily digest, on an injected clock, to a real
SMTP server (aiosmtpd, STARTTLS): each sent once, to the right list, as the days pass.

The districts' servers run on the real clock; their own mail workers are
stopped and one on a clock the test moves (the ``Clock`` protocol) drives the
same mail outbox. Without a loaded calendar, schooldays count as business days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from rt_server.core.due_dates import RequestFacts, due_date, local_day, schooldays_left
from rt_server.flows.mail import MailWorker
from rt_server.store import mail_outbox, requests
from tests.harness.flow import add_student, create_request
from tests.harness.smtp import SmtpServer
from tests.harness.world import PRIOR_SCHOOL, MutableClock, Pair, World
from tests.integration.test_mail import ADMIN, LINCOLN_LIST, mail_config, on_clock


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path / "smtp").start()
    try:
        yield server
    finally:
        server.stop()


def quiet_pair(harness: World, mail: object) -> Pair:
    pair = harness.pair(mail=mail)
    pair.start(pair.a)
    pair.start(pair.b)
    for side in (pair.a, pair.b):
        assert side.server is not None and side.server.mail_worker is not None
        side.server.mail_worker.stop()
    add_student(pair.a, "A1")
    add_student(pair.b, "B1")
    return pair


def test_a_reminder_three_schooldays_before_and_an_overdue_notice_after_once_each(
    harness: World, smtp: SmtpServer, tmp_path: Path
) -> None:
    mail = mail_config(tmp_path, smtp.port, smtp.ca)
    pair = quiet_pair(harness, mail)
    request_id = create_request(pair)
    stored = requests.get_request(pair.a.engine, request_id)  # type: ignore[arg-type]
    received, due = stored.created_at, stored.due_on
    # Stored at receipt by the due-date side: no calendar loaded, business days.
    assert due == due_date(RequestFacts(received_at=received, school=PRIOR_SCHOOL), None).due_on
    assert due is not None
    clock = MutableClock(received)
    worker = MailWorker(on_clock(pair, clock), mail)
    seen: dict[str, list[dt.date]] = {}
    for hours in range(0, 24 * 30, 6):  # a month, four passes a day
        clock.set(received + dt.timedelta(hours=hours))
        before = len(smtp.received)
        worker.run_once()
        for m in smtp.received[before:]:
            seen.setdefault(m.message["Subject"], []).append(local_day(clock()))
    short = request_id[:8]
    reminder = f"Reminder: request {short} is due {due.isoformat()}"
    overdue = f"OVERDUE: records request {short}"
    assert set(seen) == {reminder, overdue, next(s for s in seen if "received from" in s)}
    assert all(len(days) == 1 for days in seen.values()), seen
    (reminded_on,) = seen[reminder]
    assert schooldays_left(reminded_on, due, None) <= 3
    first_day = local_day(received)
    assert reminded_on == first_day or schooldays_left(reminded_on - dt.timedelta(1), due, None) > 3
    assert seen[overdue] == [due + dt.timedelta(1)]
    to = {m.message["Subject"]: m.rcpt_tos for m in smtp.received}
    assert to[reminder] == [LINCOLN_LIST] and to[overdue] == [ADMIN]
    body = next(m for m in smtp.received if m.message["Subject"] == overdue).message
    assert "EC 49068" in body.get_content()


def test_a_request_answered_before_its_due_date_gets_no_reminder(
    harness: World, smtp: SmtpServer, tmp_path: Path
) -> None:
    mail = mail_config(tmp_path, smtp.port, smtp.ca)
    pair = quiet_pair(harness, mail)
    request_id = create_request(pair)
    from tests.harness.flow import approve

    approve(pair, request_id, student="A1")
    clock = MutableClock(dt.datetime.now(dt.UTC))
    worker = MailWorker(on_clock(pair, clock), mail)
    for _ in range(30):
        worker.run_once()
        clock.advance(24 * 3600)
    kinds = {n.kind for n in mail_outbox.notices(pair.a.engine)}
    assert kinds == {"new_inbound"}


def test_the_daily_digest_goes_once_a_day_instead_of_one_mail_per_reminder(
    harness: World, smtp: SmtpServer, tmp_path: Path
) -> None:
    mail = mail_config(tmp_path, smtp.port, smtp.ca, digest=True, digest_hour=7)
    pair = quiet_pair(harness, mail)
    request_id = create_request(pair)
    clock = MutableClock(dt.datetime.now(dt.UTC))
    worker = MailWorker(on_clock(pair, clock), mail)
    for _ in range(4 * 20):  # twenty days, four passes a day
        worker.run_once()
        clock.advance(6 * 3600)
    # The servers' own workers may have sent today's digest before they were stopped.
    digests = [m for m in smtp.received if "digest" in m.message["Subject"]]
    assert 19 <= len(digests) <= 22
    assert len({m.message["Message-ID"] for m in digests}) == len(digests)
    assert all(m.rcpt_tos == [ADMIN] for m in digests)
    assert request_id[:8] in digests[-19].message.get_content()
    assert "OVERDUE" in digests[-1].message.get_content()
    assert not [m for m in smtp.received if "Reminder" in m.message["Subject"]]
