"""A legitimate district sending absurd times and ids: refused, logged without the id, and
nothing changed.

The sender is an enrolled district using its own keys (B for requests,
messages and notices, A for decisions and transfers): every signature verifies,
so only the bounds of ``rt_server.core.validate.check_peer_time`` and the id
parsers of ``rt_client.ids`` stand between the message and the database.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from protos.rt.v1 import common_pb2, peer_pb2
from rt_client.crypto import envelope
from rt_client.directory import utc_now
from rt_server.core.validate import MAX_REQUEST_LIFETIME
from tests.harness.flow import Status, approve, create_request, get, wait_status
from tests.harness.world import NEW, PRIOR
from tests.security.conftest import (
    RPC_TIMEOUT,
    Code,
    World,
    forge_transfer,
    plaintext_of,
    records_request,
    refused,
    sign,
    transfer_header,
    unchanged,
)
from tests.security.test_bad_input import ONE_HIS, batch, his
from tests.security.test_identity_and_requests import decision, import_notice, thread_message
from tests.security.test_transfer_tampering import deliver

FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)
LONG_AGO = datetime(1971, 1, 1, tzinfo=UTC)


def new_id() -> str:
    return str(uuid.uuid4())


# --- times ---------------------------------------------------------------------------------------


def _submit(world: World, message: peer_pb2.RecordsRequest) -> Callable[[], Any]:
    b = world.b.enrolled.identity
    stub = world.peer(world.a, b.tls)
    return lambda: stub.SubmitRequest(sign(b, envelope.LABEL_REQUEST, message), timeout=RPC_TIMEOUT)


def _request_at(created: datetime, expires: datetime) -> peer_pb2.RecordsRequest:
    return records_request(request_id=new_id(), now=created, ttl=expires - created)


def _absurd_requests() -> dict[str, peer_pb2.RecordsRequest]:
    now = utc_now()
    return {
        "created in 1971, expiring 9999-12-31": _request_at(LONG_AGO, FAR_FUTURE),
        "created in 1971, expiring next month": _request_at(LONG_AGO, now + timedelta(days=30)),
        "created now, expiring 9999-12-31": _request_at(now, FAR_FUTURE),
        "expiring a year and a day after creation": _request_at(
            now, now + MAX_REQUEST_LIFETIME + timedelta(days=1)
        ),
        "created 31 days ago, expiring next month": _request_at(
            now - timedelta(days=31), now + timedelta(days=30)
        ),
        "created an hour in the future": _request_at(
            now + timedelta(hours=1), now + timedelta(days=30)
        ),
    }


@pytest.mark.parametrize("case", list(_absurd_requests()))
def test_a_request_with_absurd_times_is_refused_and_nothing_stored(world: World, case: str) -> None:
    message = _absurd_requests()[case]
    with unchanged(world):
        err = refused(_submit(world, message), Code.INVALID_ARGUMENT)
    assert err.details() == "refused"


def test_a_request_with_sane_times_at_the_edges_is_accepted(world: World) -> None:
    """A request delayed a week in B's outbox, or from a clock a minute ahead, still lands."""
    now = utc_now()
    for message in (
        _request_at(now - timedelta(days=7), now + timedelta(days=23)),
        _request_at(now + timedelta(minutes=1), now + timedelta(days=30)),
        _request_at(now, now + MAX_REQUEST_LIFETIME - timedelta(minutes=1)),
    ):
        receipt = _submit(world, message)()
        assert receipt.signer_district == PRIOR


@pytest.mark.parametrize(
    "decided_at", [FAR_FUTURE, LONG_AGO, "an hour from now"], ids=["9999", "1971", "in an hour"]
)
def test_a_decision_with_an_absurd_time_is_refused_and_the_status_unchanged(
    world: World, pending_request: str, decided_at: Any
) -> None:
    a = world.a.enrolled.identity
    stub = world.peer(world.b, a.tls)
    when = utc_now() + timedelta(hours=1) if isinstance(decided_at, str) else decided_at
    # A rejection: accepted, it would make B's request REJECTED at once.
    message = decision(pending_request, reason=common_pb2.RECORDS_WITHHELD)
    message.decided_at.FromDatetime(when)
    with unchanged(world):
        err = refused(
            lambda: stub.SubmitDecision(
                sign(a, envelope.LABEL_DECISION, message), timeout=RPC_TIMEOUT
            ),
            Code.INVALID_ARGUMENT,
        )
    assert err.details() == "refused"
    assert get(world.b, pending_request).summary.status == Status.PENDING


def test_a_thread_message_dated_far_in_the_future_is_refused(
    world: World, pending_request: str
) -> None:
    a, b = world.a.enrolled.identity, world.b.enrolled.identity
    to_a = thread_message(pending_request, sender=NEW, to=PRIOR)
    to_b = thread_message(pending_request, sender=PRIOR, to=NEW)
    for message in (to_a, to_b):
        message.sent_at.FromDatetime(utc_now() + timedelta(days=1))
    to_a_late = thread_message(pending_request, sender=NEW, to=PRIOR)
    to_a_late.sent_at.FromDatetime(FAR_FUTURE)
    with unchanged(world):
        for stub, signer, message in [
            (world.peer(world.a, b.tls), b, to_a),
            (world.peer(world.a, b.tls), b, to_a_late),
            (world.peer(world.b, a.tls), a, to_b),
        ]:
            signed = sign(signer, envelope.LABEL_MESSAGE, message)
            refused(
                lambda s=signed, p=stub: p.PostMessage(s, timeout=RPC_TIMEOUT),
                Code.INVALID_ARGUMENT,
            )


def test_an_import_notice_dated_9999_is_refused_and_the_request_stays_sent(world: World) -> None:
    request_id = create_request(world.pair)
    approve(world.pair, request_id)
    wait_status(world.a, request_id, Status.SENT)
    transfer_id = get(world.b, request_id).transfer_id
    notice = import_notice(request_id, transfer_id)  # right ids: only the time is wrong
    notice.imported_at.FromDatetime(FAR_FUTURE)
    b = world.b.enrolled.identity
    stub = world.peer(world.a, b.tls)
    with unchanged(world):
        refused(
            lambda: stub.NotifyImport(
                sign(b, envelope.LABEL_IMPORT_NOTICE, notice), timeout=RPC_TIMEOUT
            ),
            Code.INVALID_ARGUMENT,
        )
    assert get(world.a, request_id).summary.status == Status.SENT


@pytest.mark.parametrize("created_at", [FAR_FUTURE, LONG_AGO], ids=["9999", "1971"])
def test_a_transfer_header_with_an_absurd_created_at_is_refused(
    world: World, pending_request: str, created_at: datetime
) -> None:
    plaintext = plaintext_of([batch(his=[his()])])
    header = transfer_header(
        transfer_id=new_id(),
        request_id=pending_request,
        sender=PRIOR,
        receiver=world.entry(NEW),
        tables=ONE_HIS,
        plaintext_bytes=len(plaintext),
    )
    header.created_at.FromDatetime(created_at)
    t = forge_transfer(
        plaintext=plaintext,
        header=header,
        signer=world.a.enrolled.identity,
        receiver=world.entry(NEW),
    )
    with unchanged(world):
        refused(lambda: deliver(world, t.frames()), Code.INVALID_ARGUMENT)
    assert get(world.b, pending_request).summary.status == Status.PENDING


# --- ids -----------------------------------------------------------------------------------------


def test_get_delivery_offset_with_a_3_mib_transfer_id(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    huge = "t" * (3 * 1024 * 1024)
    stub = world.peer(world.b, world.a.enrolled.identity.tls)
    caplog.set_level(logging.DEBUG)
    with unchanged(world):
        err = refused(
            lambda: stub.GetDeliveryOffset(
                peer_pb2.DeliveryOffsetRequest(transfer_id=huge), timeout=RPC_TIMEOUT
            ),
            Code.INVALID_ARGUMENT,
        )
    assert err.details() == "refused"
    assert any("GetDeliveryOffset" in r.getMessage() for r in caplog.records)  # it was logged ...
    assert "t" * 16 not in caplog.text  # ... without the id


def _long(n: int = 60_000) -> str:
    return "9" * n  # under the 64 KiB envelope limit: signed, verified, then refused


def _id_attacks(world: World, request_id: str) -> dict[str, Callable[[], Any]]:
    a, b = world.a.enrolled.identity, world.b.enrolled.identity
    a_from_b, b_from_a = world.peer(world.a, b.tls), world.peer(world.b, a.tls)
    rejection = decision(_long(), reason=common_pb2.RECORDS_WITHHELD)
    long_decision_id = decision(request_id, reason=common_pb2.RECORDS_WITHHELD)
    long_decision_id.decision_id = _long()
    approval = decision(request_id, approved=True, transfer_id=_long())
    message_to_a = thread_message(_long(), sender=NEW, to=PRIOR)
    long_message_id = thread_message(request_id, sender=PRIOR, to=NEW)
    long_message_id.message_id = _long()
    notice = import_notice(request_id, _long())
    long_notice_request = import_notice(_long(), new_id())
    return {
        "decision for a long request id": lambda: b_from_a.SubmitDecision(
            sign(a, envelope.LABEL_DECISION, rejection), timeout=RPC_TIMEOUT
        ),
        "decision with a long decision id": lambda: b_from_a.SubmitDecision(
            sign(a, envelope.LABEL_DECISION, long_decision_id), timeout=RPC_TIMEOUT
        ),
        "approval with a long transfer id": lambda: b_from_a.SubmitDecision(
            sign(a, envelope.LABEL_DECISION, approval), timeout=RPC_TIMEOUT
        ),
        "message for a long request id": lambda: a_from_b.PostMessage(
            sign(b, envelope.LABEL_MESSAGE, message_to_a), timeout=RPC_TIMEOUT
        ),
        "message with a long message id": lambda: b_from_a.PostMessage(
            sign(a, envelope.LABEL_MESSAGE, long_message_id), timeout=RPC_TIMEOUT
        ),
        "notice with a long transfer id": lambda: a_from_b.NotifyImport(
            sign(b, envelope.LABEL_IMPORT_NOTICE, notice), timeout=RPC_TIMEOUT
        ),
        "notice for a long request id": lambda: a_from_b.NotifyImport(
            sign(b, envelope.LABEL_IMPORT_NOTICE, long_notice_request), timeout=RPC_TIMEOUT
        ),
        "request with a long request id": _submit(world, records_request(request_id=_long())),
        "request with a long requesting school": _submit(
            world, _with(records_request(request_id=new_id()), requesting_school=_long())
        ),
    }


def _with(message: peer_pb2.RecordsRequest, **values: str) -> peer_pb2.RecordsRequest:
    for name, value in values.items():
        setattr(message, name, value)
    return message


ID_ATTACKS = [
    "decision for a long request id",
    "decision with a long decision id",
    "approval with a long transfer id",
    "message for a long request id",
    "message with a long message id",
    "notice with a long transfer id",
    "notice for a long request id",
    "request with a long request id",
    "request with a long requesting school",
]


@pytest.mark.parametrize("case", ID_ATTACKS)
def test_a_long_id_is_refused_before_use_and_never_logged(
    world: World, pending_request: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    attack = _id_attacks(world, pending_request)[case]
    caplog.set_level(logging.DEBUG)
    with unchanged(world):
        refused(attack, Code.INVALID_ARGUMENT)
    assert caplog.records  # the refusal was logged ...
    assert "9" * 16 not in caplog.text  # ... without the id
    assert get(world.b, pending_request).summary.status == Status.PENDING


def test_a_long_requesting_district_is_refused_and_never_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Not the TLS peer: PERMISSION_DENIED, and the log says so without quoting the claim."""
    message = _with(records_request(request_id=new_id()), requesting_district=_long())
    caplog.set_level(logging.DEBUG)
    with unchanged(world):
        refused(_submit(world, message), Code.PERMISSION_DENIED)
    assert caplog.records
    assert "9" * 16 not in caplog.text
