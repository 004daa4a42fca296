"""Bad input from a peer: every one a clear error, and nothing changed.

The sender here is a *legitimate* peer (B's own keys for requests, A's own keys
for decisions and transfers): everything is validly signed and encrypted, so
only the checks on content stand between the input and the database. A crash
(``INTERNAL``) is a failure of these tests as much as an accepted input is.

Names that look dangerous but are legitimate (``O'Brien``, ``Nuñez``,
``Robert'); DROP TABLE students;--``) are the opposite case: accepted, stored
verbatim, harmless. Rows with such values are round-tripped through the whole
flow in ``tests/integration/test_flow.py::test_full_flow_every_table_round_trips``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from protos.rt.v1 import common_pb2, peer_pb2, records_pb2
from rt_client.crypto import envelope
from rt_client.framing import encode_varint
from rt_client.signed_messages import MAX_BODY_BYTES
from rt_server.core.validate import MAX_ROWS_PER_BATCH
from rt_server.store.schema import METADATA, REQUESTS
from tests.harness.flow import INJECTION, Status, get
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
from tests.security.test_identity_and_requests import decision, import_notice, thread_message
from tests.security.test_transfer_tampering import deliver


def new_id() -> str:
    return str(uuid.uuid4())


# --- requests ------------------------------------------------------------------------------------


def _submit(world: World, message: Any) -> Callable[[], Any]:
    b = world.b.enrolled.identity
    stub = world.peer(world.a, b.tls)
    return lambda: stub.SubmitRequest(sign(b, envelope.LABEL_REQUEST, message), timeout=RPC_TIMEOUT)


def _request(**changes: Any) -> peer_pb2.RecordsRequest:
    message = records_request(request_id=new_id())
    for path, value in changes.items():
        target = message.student if path.startswith("student_") else message
        name = path.removeprefix("student_")
        if value is None:
            target.ClearField(name)
        elif isinstance(value, list):
            getattr(target, name).extend(value)
        else:
            setattr(target, name, value)
    return message


BAD_REQUESTS: dict[str, dict[str, Any]] = {
    "missing request id": {"request_id": None},
    "request id not a UUID": {"request_id": "'; DROP TABLE requests;--"},
    "upper-case UUID": {"request_id": str(uuid.uuid4()).upper()},
    "missing nonce": {"nonce": None},
    "short nonce": {"nonce": b"1234"},
    "missing prior school": {"prior_school": None},
    "missing student identity": {
        "student_ssid": None,
        "student_legal_last_name": None,
        "student_birth_date": None,
    },
    "SSID of 9 digits": {"student_ssid": "123456789"},
    "SSID with letters": {"student_ssid": "12345678X0"},
    "date 2025-02-30": {"student_birth_date": "2025-02-30"},
    "date 2011-4-2": {"student_birth_date": "2011-4-2"},
    "born in 1800": {"student_birth_date": "1800-01-01"},
    "last name of 51 characters": {"student_legal_last_name": "N" * 51},
    "first name of 51 characters": {"student_legal_first_name": "Ñ" * 51},
    "NUL in a name": {"student_legal_last_name": "Nu\x00ñez"},
    "requested-by of 101 characters": {"requested_by": "x" * 101},
    "unknown table": {"tables": [99]},
    "missing expiry": {"expires_at": None},
    "missing creation time": {"created_at": None},
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_a_bad_request_is_refused(world: World, case: str) -> None:
    message = _request(**BAD_REQUESTS[case])
    with unchanged(world):
        err = refused(_submit(world, message), Code.INVALID_ARGUMENT)
    assert err.details() == "refused"


def test_a_request_for_a_school_that_is_not_ours_is_not_found(world: World) -> None:
    for school in ("19647339999999", "11111110000001"):  # A's district, unknown; another district
        with unchanged(world):
            refused(_submit(world, _request(prior_school=school)), Code.NOT_FOUND)


def test_timestamps_out_of_range_are_refused_not_crashed_on(world: World) -> None:
    for field in ("created_at", "expires_at"):
        message = _request()
        getattr(message, field).seconds = 2**62
        with unchanged(world):
            refused(_submit(world, message), Code.INVALID_ARGUMENT)


def test_invalid_utf8_in_a_request_is_refused(world: World) -> None:
    message = _request(student_legal_last_name="QQQQ")
    body = message.SerializeToString().replace(b"QQQQ", b"\xff\xfeQQ")
    b = world.b.enrolled.identity
    signed = common_pb2.SignedEnvelope(
        body=body,
        signer_district=NEW,
        signature=envelope.sign_body(envelope.LABEL_REQUEST, body, b.signing_key),
    )
    stub = world.peer(world.a, b.tls)
    with unchanged(world):
        refused(lambda: stub.SubmitRequest(signed, timeout=RPC_TIMEOUT), Code.INVALID_ARGUMENT)


def test_oversized_messages_are_refused(world: World) -> None:
    b = world.b.enrolled.identity
    stub = world.peer(world.a, b.tls)
    big = _request(requested_by="x" * (MAX_BODY_BYTES + 1))  # signed, but over our bound
    huge = common_pb2.SignedEnvelope(body=b"\x00" * (5 * 1024 * 1024), signer_district=NEW)
    with unchanged(world):
        refused(_submit(world, big), Code.INVALID_ARGUMENT)
        # Over gRPC's 4 MiB receive limit: refused before any of our code runs.
        refused(lambda: stub.SubmitRequest(huge, timeout=RPC_TIMEOUT), Code.RESOURCE_EXHAUSTED)


def test_names_that_look_like_attacks_are_stored_verbatim(world: World) -> None:
    """Not bad input: legitimate names, kept exactly, executing nothing."""
    names = [("Seán", "O'Brien"), ("María José", "Nuñez"), ("Robert", INJECTION)]
    for first, last in names:
        message = _request(student_legal_first_name=first, student_legal_last_name=last)
        _submit(world, message)()
        with world.a.engine.connect() as conn:
            row = conn.execute(
                select(REQUESTS.c.legal_first_name, REQUESTS.c.legal_last_name).where(
                    REQUESTS.c.request_id == message.request_id
                )
            ).one()
        assert (row.legal_first_name, row.legal_last_name) == (first, last)
    with world.a.engine.connect() as conn:  # every table is still there
        for table in METADATA.sorted_tables:
            conn.execute(select(table).limit(1)).all()


# --- decisions, messages, notices ----------------------------------------------------------------


def test_bad_decisions_are_refused(world: World, pending_request: str) -> None:
    a = world.a.enrolled.identity
    stub = world.peer(world.b, a.tls)
    bad: dict[str, peer_pb2.Decision] = {
        "missing decision id": decision(pending_request, approved=True, transfer_id=new_id()),
        "decision id too long": decision(pending_request, approved=True, transfer_id=new_id()),
        "transfer id not a UUID": decision(pending_request, approved=True, transfer_id="x"),
        "approval without a transfer id": decision(pending_request, approved=True),
        "unknown reason": decision(pending_request, reason=99),  # type: ignore[arg-type]
        "OTHER without text": decision(pending_request, reason=common_pb2.OTHER),
        "text too long": decision(pending_request, reason=common_pb2.OTHER, reason_text="x" * 1001),
        "unknown table": decision(
            pending_request,
            approved=True,
            transfer_id=new_id(),
            tables=[99],  # type: ignore[list-item]
        ),
        "time out of range": decision(pending_request, reason=common_pb2.RECORDS_WITHHELD),
    }
    bad["missing decision id"].decision_id = ""
    bad["decision id too long"].decision_id = "d" * 37
    bad["time out of range"].decided_at.seconds = 2**62
    with unchanged(world):
        for case, message in bad.items():
            signed = sign(a, envelope.LABEL_DECISION, message)
            err = refused(
                lambda s=signed: stub.SubmitDecision(s, timeout=RPC_TIMEOUT), Code.INVALID_ARGUMENT
            )
            assert err.details() == "refused", case
    assert get(world.b, pending_request).summary.status == Status.PENDING


def test_bad_thread_messages_and_notices_are_refused(world: World, pending_request: str) -> None:
    b = world.b.enrolled.identity
    a_from_b = world.peer(world.a, b.tls)
    messages = {
        "empty body": thread_message(pending_request, sender=NEW, to=PRIOR),
        "body of 4001 characters": thread_message(pending_request, sender=NEW, to=PRIOR),
        "message id not a UUID": thread_message(pending_request, sender=NEW, to=PRIOR),
        "author of 101 characters": thread_message(pending_request, sender=NEW, to=PRIOR),
    }
    messages["empty body"].body = "   "
    messages["body of 4001 characters"].body = "x" * 4001
    messages["message id not a UUID"].message_id = "m" * 200
    messages["author of 101 characters"].author = "a" * 101
    notice = import_notice(pending_request, new_id())
    notice.notice_id = "n" * 200
    with unchanged(world):
        for case, message in messages.items():
            signed = sign(b, envelope.LABEL_MESSAGE, message)
            refused(
                lambda s=signed: a_from_b.PostMessage(s, timeout=RPC_TIMEOUT), Code.INVALID_ARGUMENT
            )
        signed = sign(b, envelope.LABEL_IMPORT_NOTICE, notice)
        refused(lambda: a_from_b.NotifyImport(signed, timeout=RPC_TIMEOUT), Code.INVALID_ARGUMENT)
        assert case


# --- transfers: validly signed and encrypted, bad inside -----------------------------------------


def his(**values: Any) -> records_pb2.HisRow:
    row = records_pb2.HisRow(
        yr="2023-2024", te="F", cn="ENG-1", co="English 9", st=PRIOR + "0000001"
    )
    for name, value in values.items():
        setattr(row, name, value)
    return row


def batch(table: int = common_pb2.HIS, **rows: Any) -> records_pb2.RecordBatch:
    b = records_pb2.RecordBatch(table=table)  # type: ignore[arg-type]
    for field, values in rows.items():
        getattr(b, field).extend(values)
    return b


def forged(world: World, request_id: str, plaintext: bytes, tables: dict[int, int], **header: Any):
    h = transfer_header(
        transfer_id=new_id(),
        request_id=request_id,
        sender=PRIOR,
        receiver=world.entry(NEW),
        tables=tables,
        plaintext_bytes=len(plaintext),
    )
    for name, value in header.items():
        setattr(h, name, value)
    if "plaintext_bytes" in header and "ciphertext_bytes" not in header:
        from rt_client.transfer import ciphertext_length

        h.ciphertext_bytes = ciphertext_length(h.plaintext_bytes)
    return forge_transfer(
        plaintext=plaintext, header=h, signer=world.a.enrolled.identity, receiver=world.entry(NEW)
    )


def _invalid_utf8_batch() -> bytes:
    raw = batch(his=[his(co="QQQQ")]).SerializeToString().replace(b"QQQQ", b"\xc3\x28QQ")
    return encode_varint(len(raw)) + raw


ONE_HIS = {common_pb2.HIS: 1}
BAD_CONTENT: dict[str, tuple[bytes, dict[int, int]]] = {
    "fewer rows than declared": (plaintext_of([batch(his=[his()])]), {common_pb2.HIS: 2}),
    "more rows than declared": (plaintext_of([batch(his=[his(), his(te="S")])]), ONE_HIS),
    "a table the header does not declare": (
        plaintext_of([batch(common_pb2.TST, tst=[records_pb2.TstRow(id="X")])]),
        ONE_HIS,
    ),
    "rows of two tables in one batch": (
        plaintext_of([batch(his=[his()], tst=[records_pb2.TstRow(id="X")])]),
        {common_pb2.HIS: 1, common_pb2.TST: 1},
    ),
    "a batch naming no table": (plaintext_of([batch(0, his=[his()])]), ONE_HIS),
    "a string longer than its column": (plaintext_of([batch(his=[his(co="C" * 61)])]), ONE_HIS),
    "invalid UTF-8": (_invalid_utf8_batch(), ONE_HIS),
    "the date 2025-02-30": (plaintext_of([batch(his=[his(dc="2025-02-30")])]), ONE_HIS),
    "a date that is not a date": (plaintext_of([batch(his=[his(dc="yesterday")])]), ONE_HIS),
    "a decimal with three places": (plaintext_of([batch(his=[his(cr="2.505")])]), ONE_HIS),
    "a decimal that is not a number": (plaintext_of([batch(his=[his(cr="NaN")])]), ONE_HIS),
    "NUL in a string": (plaintext_of([batch(his=[his(co="a\x00b")])]), ONE_HIS),
    "too many rows in one batch": (
        plaintext_of([batch(his=[his() for _ in range(MAX_ROWS_PER_BATCH + 1)])]),
        {common_pb2.HIS: MAX_ROWS_PER_BATCH + 1},
    ),
    "a batch longer than allowed": (encode_varint(5 * 1024 * 1024) + b"\x08\x04", ONE_HIS),
    "a malformed batch length": (b"\xff" * 6, ONE_HIS),
    "the stream ends mid-batch": (plaintext_of([batch(his=[his()])])[:-3], ONE_HIS),
    "bytes that are not protobuf": (b"\x05\xff\xff\xff\xff\xff", ONE_HIS),
}


@pytest.mark.parametrize("case", list(BAD_CONTENT), ids=list(BAD_CONTENT))
def test_a_transfer_with_bad_content_is_refused(
    world: World, pending_request: str, case: str
) -> None:
    plaintext, tables = BAD_CONTENT[case]
    t = forged(world, pending_request, plaintext, tables)
    with unchanged(world):
        err = refused(lambda: deliver(world, t.frames()), Code.INVALID_ARGUMENT)
    assert err.details() == "refused"
    assert get(world.b, pending_request).summary.status == Status.PENDING


BAD_HEADERS: dict[str, dict[str, Any]] = {
    "transfer id not a UUID": {"transfer_id": "../../etc/passwd"},
    "empty transfer id": {"transfer_id": ""},
    "huge transfer id": {"transfer_id": "t" * 100_000},
    "format version 3": {"format_version": 3},
    "another payload suite": {"payload_suite": "Cobblestone-128"},
    "an unknown KEM": {"hpke_kem": "RSA"},
    "another receiver key id": {"receiver_key_id": "0" * 16},
    "no receiver key id": {"receiver_key_id": ""},
    "sizes that do not agree": {"ciphertext_bytes": 1},
    "larger than B accepts": {"plaintext_bytes": 3 * 1024**3},
}


@pytest.mark.parametrize("case", list(BAD_HEADERS), ids=list(BAD_HEADERS))
def test_a_transfer_with_a_bad_header_is_refused(
    world: World, pending_request: str, case: str
) -> None:
    plaintext = plaintext_of([batch(his=[his()])])
    t = forged(world, pending_request, plaintext, ONE_HIS, **BAD_HEADERS[case])
    with unchanged(world):
        refused(lambda: deliver(world, t.frames()), Code.INVALID_ARGUMENT)


def test_bad_table_counts_in_the_header_are_refused(world: World, pending_request: str) -> None:
    plaintext = plaintext_of([batch(his=[his()])])
    for counts in (
        [common_pb2.TableCount(table=common_pb2.HIS, rows=1)] * 2,
        [common_pb2.TableCount(table=99, rows=1)],  # type: ignore[arg-type]
        [common_pb2.TableCount(table=0, rows=1)],
        [common_pb2.TableCount(table=common_pb2.HIS, rows=2**31)],
    ):
        t = forged(world, pending_request, plaintext, ONE_HIS)
        h = records_pb2.TransferHeader()
        h.CopyFrom(t.header_message)
        del h.tables[:]
        h.tables.extend(counts)
        t = forge_transfer(
            plaintext=plaintext,
            header=h,
            signer=world.a.enrolled.identity,
            receiver=world.entry(NEW),
        )
        with unchanged(world):
            refused(lambda t=t: deliver(world, t.frames()), Code.INVALID_ARGUMENT)


def test_bad_framing_is_refused(world: World, pending_request: str) -> None:
    t = forged(world, pending_request, plaintext_of([batch(his=[his()])]), ONE_HIS)
    start, *rest = t.frames()
    long_key = peer_pb2.DeliveryFrame()
    long_key.CopyFrom(start)
    long_key.start.wrapped_key = b"k" * 4097
    attempts = {
        "no frames at all": [],
        "no header first": rest,
        "the trailer first": [rest[-1], start, *rest[:-1]],
        "an empty ciphertext frame": [start, peer_pb2.DeliveryFrame(ciphertext=b""), *rest],
        "an empty frame": [start, peer_pb2.DeliveryFrame(), *rest],
        "a frame over the frame limit": [
            start,
            peer_pb2.DeliveryFrame(ciphertext=b"\x00" * (3 * 1024 * 1024)),
            *rest,
        ],
        "a wrapped key of 4097 bytes": [long_key, *rest],
        "a resume offset for a transfer never started": [
            peer_pb2.DeliveryFrame(
                start=peer_pb2.DeliveryStart(header=t.header, wrapped_key=t.wrapped_key, offset=7)
            ),
            *rest,
        ],
        "two trailers": [*t.frames(), rest[-1]],
    }
    resume = "a resume offset for a transfer never started"
    for case, frames in attempts.items():
        expected = Code.FAILED_PRECONDITION if case == resume else Code.INVALID_ARGUMENT
        with unchanged(world):
            err = refused(lambda f=frames: deliver(world, f), expected)
            assert err.details() == "refused", case
    # Over gRPC's 4 MiB message limit: cut by gRPC before any of our code sees it.
    # The header before it was stored; nothing of the transfer arrived, so
    # nothing of it is kept.
    huge = [start, peer_pb2.DeliveryFrame(ciphertext=b"\x00" * (5 * 1024 * 1024))]
    with unchanged(world):
        refused(lambda: deliver(world, huge), Code.RESOURCE_EXHAUSTED)


def test_more_frames_than_the_header_s_size_allows(world: World, pending_request: str) -> None:
    """One byte per frame: as many database writes as bytes. Refused early, nothing kept."""
    records = [batch(his=[his(co=f"Course {i}") for i in range(300)])]
    t = forged(world, pending_request, plaintext_of(records), {common_pb2.HIS: 300})
    one_byte_frames = t.frames(pieces=[t.ciphertext[i : i + 1] for i in range(len(t.ciphertext))])
    with unchanged(world):
        refused(lambda: deliver(world, one_byte_frames), Code.INVALID_ARGUMENT)
