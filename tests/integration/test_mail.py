"""E-mail notices through a real SMTP server (aiosmtpd, STARTTLS and AUTH required).

Two real district servers send their notices to it: a new inbound request to
the prior school's incoming-request list, records arrived to the requester.
Each notice arrives once, over TLS, with no student data in it; a mail server
that is down for a while loses nothing and doubles nothing; one whose
certificate does not verify gets nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from protos.rt.v1 import common_pb2, registrar_pb2
from rt_client.mail_config import MailConfig
from rt_server.flows.district import District
from rt_server.flows.mail import MailWorker
from rt_server.store import mail_outbox
from rt_server.store.schema import COMPLIANCE_NOTICES
from tests.harness.cli import Rt
from tests.harness.flow import (
    FIRST,
    LAST,
    RPC_TIMEOUT,
    SSID,
    add_student,
    approve,
    create_request,
)
from tests.harness.smtp import PASSWORD, USERNAME, SmtpServer, make_ca_and_server_cert
from tests.harness.world import NEW_SCHOOL, PRIOR_SCHOOL, MutableClock, Pair, World

LINCOLN_LIST = "incoming@lincoln.example"
BOB = "bob@roosevelt.example"
ADMIN = "records-admin@district.example"
POLICE = "youth-services@police.example"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path / "smtp").start()
    try:
        yield server
    finally:
        server.stop()


def mail_config(tmp_path: Path, port: int, ca: Path, **kw: object) -> MailConfig:
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "ca_file": ca,
        "username": USERNAME,
        "password_file": secret,
        "from_address": "records-transfer@district.example",
        "records_administrator": ADMIN,
        "schools": {PRIOR_SCHOOL: (LINCOLN_LIST,)},
        "staff": {"bob": BOB},
        "retry_base_seconds": 0.2,
        "retry_max_seconds": 0.5,
        "timeout_seconds": 5.0,
    }
    settings.update(kw)
    return MailConfig(**settings)  # type: ignore[arg-type]


def on_clock(pair: Pair, clock: MutableClock) -> District:
    """District A as its server holds it, read on ``clock`` (the Clock protocol)."""
    assert pair.a.server is not None and pair.a.server.district is not None
    return dataclasses.replace(pair.a.server.district, clock=clock)


def started(harness: World, mail: MailConfig) -> Pair:
    pair = harness.pair(mail=mail)
    pair.start(pair.a)
    pair.start(pair.b)
    add_student(pair.a, "A1")
    add_student(pair.b, "B1")
    return pair


def wait_for(what: str, probe, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_notices_reach_the_school_list_and_the_requester_once_over_tls(
    harness: World, smtp: SmtpServer, tmp_path: Path
) -> None:
    pair = started(harness, mail_config(tmp_path, smtp.port, smtp.ca))
    request_id = create_request(pair)
    approve(pair, request_id, student="A1")
    wait_for("two notices", lambda: len(smtp.received) >= 2)
    time.sleep(1.0)  # several more worker passes: nothing more may come
    got = smtp.received
    by_rcpt = {tuple(m.rcpt_tos): m for m in got}
    assert len(got) == 2, [m.message["Subject"] for m in got]
    assert set(by_rcpt) == {(LINCOLN_LIST,), (BOB,)}
    assert all(m.tls for m in got)
    inbound = by_rcpt[(LINCOLN_LIST,)].message
    assert request_id[:8] in inbound["Subject"]
    arrived = by_rcpt[(BOB,)].message
    assert arrived["Subject"] == f"Records arrived for request {request_id[:8]}"
    for m in got:
        text = m.message.as_string()
        assert request_id in text  # the command to see it
        for secret in (FIRST, LAST, SSID):
            assert secret not in text
        assert m.message["Auto-Submitted"] == "auto-generated"
    for side in (pair.a, pair.b):
        assert {n.status for n in mail_outbox.notices(side.engine)} == {"SENT"}


def test_a_mail_server_down_for_a_while_loses_nothing_and_sends_nothing_twice(
    harness: World, smtp: SmtpServer, tmp_path: Path
) -> None:
    smtp.stop()
    pair = started(harness, mail_config(tmp_path, smtp.port, smtp.ca))
    ids = [create_request(pair)]
    add_student(pair.b, "B2", ssid="2234567890")
    ids.append(create_request(pair, "B2"))
    # The worker tries, fails and says why; the notices wait.
    wait_for(
        "failed attempts",
        lambda: all(n.attempts >= 2 for n in mail_outbox.notices(pair.a.engine)),
    )
    waiting = mail_outbox.notices(pair.a.engine)
    assert [n.status for n in waiting] == ["QUEUED", "QUEUED"]
    assert all("refused the connection" in (n.last_error or "") for n in waiting)
    smtp.start()
    wait_for("both notices", lambda: len(smtp.received) >= 2)
    time.sleep(1.5)
    subjects = sorted(m.message["Subject"] for m in smtp.received)
    assert len(subjects) == 2
    assert all(any(i[:8] in s for s in subjects) for i in ids)
    assert [n.status for n in mail_outbox.notices(pair.a.engine)] == ["SENT", "SENT"]


def test_a_day_long_outage_under_an_injected_clock(
    harness: World, smtp: SmtpServer, tmp_path: Path
) -> None:
    """The server's own worker stopped; one on a moving clock drives the same outbox."""
    mail = mail_config(tmp_path, smtp.port, smtp.ca, retry_base_seconds=60, retry_max_seconds=3600)
    pair = started(harness, mail)
    for side in (pair.a, pair.b):
        assert side.server is not None and side.server.mail_worker is not None
        side.server.mail_worker.stop()
    smtp.stop()
    request_id = create_request(pair)
    clock = MutableClock(dt.datetime.now(dt.UTC))
    worker = MailWorker(on_clock(pair, clock), mail)
    passes = 0
    end = clock() + dt.timedelta(hours=24)
    while clock() < end:
        assert worker.run_once() == 0
        clock.advance(600)
        passes += 1
    (notice,) = mail_outbox.notices(pair.a.engine)
    assert notice.status == "QUEUED" and 5 <= notice.attempts < passes  # backed off
    smtp.start()
    clock.advance(3600)
    assert worker.run_once() == 1
    assert worker.run_once() == 0
    clock.advance(7 * 24 * 3600)
    assert worker.run_once() == 0
    (received,) = smtp.received
    assert request_id[:8] in received.message["Subject"]


def test_a_server_whose_certificate_does_not_verify_gets_nothing(
    harness: World, smtp: SmtpServer, tmp_path: Path
) -> None:
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other", "Someone Else's CA")
    pair = started(harness, mail_config(tmp_path, smtp.port, other_ca))
    create_request(pair)
    wait_for(
        "a refused attempt",
        lambda: any(n.attempts for n in mail_outbox.notices(pair.a.engine)),
    )
    (notice,) = mail_outbox.notices(pair.a.engine)
    assert notice.status == "QUEUED"
    assert "certificate did not verify" in (notice.last_error or "")
    assert smtp.received == []


def test_an_event_seen_twice_queues_one_notice(
    harness: World, smtp: SmtpServer, tmp_path: Path
) -> None:
    pair = started(harness, mail_config(tmp_path, smtp.port, smtp.ca))
    request_id = create_request(pair)
    with pair.a.engine.begin() as conn:
        again = mail_outbox.queue_notice(
            conn,
            kind="new_inbound",
            dedupe_key=f"new_inbound:{request_id}",
            request_id=request_id,
            now=dt.datetime.now(dt.UTC),
        )
    assert again is False
    assert len(mail_outbox.notices(pair.a.engine)) == 1
    assert NEW_SCHOOL  # B's school has no list: B's notices go to the requester


def test_a_missing_child_alert_reaches_law_enforcement_once_with_the_requesters_details(
    harness: World, smtp: SmtpServer, tmp_path: Path, rt: Rt
) -> None:
    pair = harness.pair(
        mail=mail_config(tmp_path, smtp.port, smtp.ca), law_enforcement_contact=POLICE
    )
    pair.start(pair.a)
    pair.start(pair.b)
    add_student(pair.a, "A1")
    add_student(pair.b, "B1")
    assert rt(pair.a, "student", "flag", "A1", "missing-child").code == 0
    request_id = create_request(pair)
    wait_for("the alert", lambda: any(m.rcpt_tos == [POLICE] for m in smtp.received))
    time.sleep(1.0)
    (alert,) = [m for m in smtp.received if m.rcpt_tos == [POLICE]]
    text = alert.message.get_content()
    assert "EC 49068.6" in text and pair.b.code in text and NEW_SCHOOL in text
    assert request_id in text
    for secret in (FIRST, LAST, SSID):
        assert secret not in text
    with pair.a.engine.connect() as conn:
        (sent_at,) = conn.execute(select(COMPLIANCE_NOTICES.c.sent_at)).one()
    assert sent_at is not None  # the due-date side sees it sent


def test_a_rejection_reaches_the_requester_once(
    harness: World, smtp: SmtpServer, tmp_path: Path
) -> None:
    pair = started(harness, mail_config(tmp_path, smtp.port, smtp.ca))
    request_id = create_request(pair)
    pair.a.rpc.RejectRequest(
        registrar_pb2.RejectRequestRequest(
            request_id=request_id,
            reason=common_pb2.RejectReason.Value("STUDENT_NOT_FOUND"),
            text="Ana Nuñez never attended Lincoln",  # free text: stays out of mail
            actor="alice",
        ),
        timeout=RPC_TIMEOUT,
    )
    wait_for("the rejection", lambda: any(m.rcpt_tos == [BOB] for m in smtp.received))
    time.sleep(1.0)
    (rejected,) = [m for m in smtp.received if m.rcpt_tos == [BOB]]
    assert rejected.message["Subject"] == (
        f"Request {request_id[:8]} was rejected by district {pair.a.code}"
    )
    text = rejected.message.get_content()
    assert "STUDENT_NOT_FOUND" in text and "never attended" not in text and LAST not in text
