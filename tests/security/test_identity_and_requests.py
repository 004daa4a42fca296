"""Attacks on who is asking: impersonation, replay, expiry, cross-tenant access, revocation.

Against A's and B's real servers. The attacker is district C (enrolled, with
its own CA-signed certificate and signing key) or a district replaying or
misusing its own genuine messages. Each attack: the expected status, and both
databases unchanged.

Related, already covered elsewhere against the peer gate alone
(``tests/integration/test_peer_auth.py``): no client certificate, a certificate
from another CA, two URI SANs, no district URI, a CA-signed certificate for a
key the directory does not pin, an unregistered district, refusals logged
with their reason.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from protos.rt.v1 import common_pb2, peer_pb2, registrar_pb2
from rt_client.crypto import envelope
from rt_client.directory import utc_now
from rt_client.identity import load_identity
from rt_client.rotation import update_district_entry
from rt_client.signed_messages import sign_message
from rt_server.store.schema import OUTBOX, REQUESTS, TRANSFER_CHUNKS, TRANSFERS
from tests.harness.flow import Status, approve, create_request, get, import_, settle, wait_status
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR
from tests.security.conftest import (
    ATTACKER,
    ATTACKER_SCHOOL,
    RPC_TIMEOUT,
    Code,
    World,
    build_world,
    records_request,
    refused,
    sign,
    unchanged,
)


def new_id() -> str:
    return str(uuid.uuid4())


def stored(side, table, column, *where):
    with side.engine.connect() as conn:
        return conn.execute(select(getattr(table.c, column)).where(*where)).scalar_one()


def envelope_of(raw: bytes) -> common_pb2.SignedEnvelope:
    return common_pb2.SignedEnvelope.FromString(raw)


def decision(
    request_id: str, *, prior: str = PRIOR, requesting: str = NEW, **kw
) -> peer_pb2.Decision:
    d = peer_pb2.Decision(
        decision_id=new_id(),
        request_id=request_id,
        prior_district=prior,
        requesting_district=requesting,
        decided_by="mallory",
        **kw,
    )
    d.decided_at.GetCurrentTime()
    return d


def thread_message(request_id: str, *, sender: str, to: str) -> peer_pb2.ThreadMessage:
    m = peer_pb2.ThreadMessage(
        message_id=new_id(),
        request_id=request_id,
        from_district=sender,
        to_district=to,
        author="mallory",
        body="please send the records to me instead",
    )
    m.sent_at.GetCurrentTime()
    return m


def import_notice(
    request_id: str, transfer_id: str, *, requesting: str = NEW
) -> peer_pb2.ImportNotice:
    n = peer_pb2.ImportNotice(
        notice_id=new_id(),
        request_id=request_id,
        transfer_id=transfer_id,
        requesting_district=requesting,
        prior_district=PRIOR,
    )
    n.imported_at.GetCurrentTime()
    return n


# --- who signs, who connects ---------------------------------------------------------------------


def test_a_request_signed_by_b_but_sent_over_c_s_connection(world: World) -> None:
    signed = sign(
        world.b.enrolled.identity, envelope.LABEL_REQUEST, records_request(request_id=new_id())
    )
    with unchanged(world):
        err = refused(
            lambda: world.peer(world.a, world.c.identity.tls).SubmitRequest(
                signed, timeout=RPC_TIMEOUT
            ),
            Code.PERMISSION_DENIED,
        )
    assert err.details() == "not authorized"


def test_a_request_naming_a_requester_that_is_not_the_tls_peer(world: World) -> None:
    stub = world.peer(world.a, world.c.identity.tls)
    as_b = records_request(request_id=new_id())  # requesting district and school: B's
    with unchanged(world):
        # Signed by C, as C, naming B inside.
        refused(
            lambda: stub.SubmitRequest(
                sign(world.c.identity, envelope.LABEL_REQUEST, as_b), timeout=RPC_TIMEOUT
            ),
            Code.PERMISSION_DENIED,
        )
        # Signed by C's key, the envelope claiming B as its signer.
        forged = sign_message(envelope.LABEL_REQUEST, as_b, NEW, world.c.identity.signing_key)
        refused(lambda: stub.SubmitRequest(forged, timeout=RPC_TIMEOUT), Code.PERMISSION_DENIED)
        # C as the requester, but a school of B's.
        mixed = records_request(
            request_id=new_id(), requesting=ATTACKER, requesting_school=NEW_SCHOOL
        )
        refused(
            lambda: stub.SubmitRequest(
                sign(world.c.identity, envelope.LABEL_REQUEST, mixed), timeout=RPC_TIMEOUT
            ),
            Code.PERMISSION_DENIED,
        )


def test_envelopes_signed_with_an_unregistered_key(world: World, pending_request: str) -> None:
    """C's connection, C named as the signer, a key the directory does not list for C."""
    rogue = Ed25519PrivateKey.generate()

    def rogue_sign(label: bytes, message) -> common_pb2.SignedEnvelope:
        return sign_message(label, message, ATTACKER, rogue)

    a = world.peer(world.a, world.c.identity.tls)
    b = world.peer(world.b, world.c.identity.tls)
    request = records_request(
        request_id=new_id(), requesting=ATTACKER, requesting_school=ATTACKER_SCHOOL
    )
    calls = [
        lambda: a.SubmitRequest(rogue_sign(envelope.LABEL_REQUEST, request), timeout=RPC_TIMEOUT),
        lambda: b.SubmitDecision(
            rogue_sign(envelope.LABEL_DECISION, decision(pending_request, prior=ATTACKER)),
            timeout=RPC_TIMEOUT,
        ),
        lambda: a.PostMessage(
            rogue_sign(
                envelope.LABEL_MESSAGE, thread_message(pending_request, sender=ATTACKER, to=PRIOR)
            ),
            timeout=RPC_TIMEOUT,
        ),
        lambda: a.NotifyImport(
            rogue_sign(
                envelope.LABEL_IMPORT_NOTICE,
                import_notice(pending_request, new_id(), requesting=ATTACKER),
            ),
            timeout=RPC_TIMEOUT,
        ),
    ]
    with unchanged(world):
        for call in calls:
            assert refused(call, Code.INVALID_ARGUMENT).details() == "refused"


# --- replays -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def completed(world: World) -> dict[str, object]:
    """One request taken through the whole flow (with a thread message), and what it left."""
    request_id = create_request(world.pair)
    posted = world.b.rpc.PostMessage(
        registrar_pb2.PostMessageRequest(request_id=request_id, body="hello", actor="bob"),
        timeout=RPC_TIMEOUT,
    )
    approve(world.pair, request_id)
    import_(world.pair, request_id)
    wait_status(world.a, request_id, Status.COMPLETE)
    settle(world.a, world.b)
    kind = OUTBOX.c.kind
    return {
        "request_id": request_id,
        "transfer_id": get(world.b, request_id).transfer_id,
        "request": envelope_of(
            stored(world.b, REQUESTS, "request_envelope", REQUESTS.c.request_id == request_id)
        ),
        "decision": envelope_of(
            stored(world.a, REQUESTS, "decision_envelope", REQUESTS.c.request_id == request_id)
        ),
        "notice": envelope_of(
            stored(
                world.b,
                OUTBOX,
                "payload",
                OUTBOX.c.request_id == request_id,
                kind == "import_notice",
            )
        ),
        "message": envelope_of(
            stored(world.b, OUTBOX, "payload", OUTBOX.c.request_id == request_id, kind == "message")
        ),
        "message_id": posted.message_id,
    }


def test_replays_of_an_accepted_request_decision_notice_and_message(
    world: World, completed
) -> None:
    a_as_a = world.peer(world.a, world.a.enrolled.identity.tls)
    b_as_b = world.peer(world.b, world.b.enrolled.identity.tls)
    a_from_b = world.peer(world.a, world.b.enrolled.identity.tls)
    b_from_a = world.peer(world.b, world.a.enrolled.identity.tls)
    a_from_c = world.peer(world.a, world.c.identity.tls)
    b_from_c = world.peer(world.b, world.c.identity.tls)
    with unchanged(world):
        # By the district that sent it: "already received", and nothing happens again.
        for call, message in [
            (a_from_b.SubmitRequest, completed["request"]),
            (b_from_a.SubmitDecision, completed["decision"]),
            (a_from_b.NotifyImport, completed["notice"]),
            (a_from_b.PostMessage, completed["message"]),
        ]:
            assert refused(
                lambda: call(message, timeout=RPC_TIMEOUT), Code.ALREADY_EXISTS
            ).details() == ("already received")
        # By anybody else: not theirs to send.
        for call, message in [
            (a_from_c.SubmitRequest, completed["request"]),
            (b_from_c.SubmitDecision, completed["decision"]),
            (a_from_c.NotifyImport, completed["notice"]),
            (a_from_c.PostMessage, completed["message"]),
            # Sent back to the district that signed it.
            (b_as_b.SubmitDecision, completed["decision"]),
            (a_as_a.SubmitRequest, completed["request"]),
        ]:
            refused(lambda: call(message, timeout=RPC_TIMEOUT), Code.PERMISSION_DENIED)
    assert get(world.a, completed["request_id"]).summary.status == Status.COMPLETE
    assert get(world.b, completed["request_id"]).summary.status == Status.IMPORTED


def test_receipts_and_acks_replayed_as_requests_decisions_notices_or_messages(
    world: World, completed
) -> None:
    """Signatures are domain-separated: a receipt verifies as a receipt and as nothing else."""
    from tests.security.conftest import Transfer
    from tests.security.test_transfer_tampering import deliver

    request_id, transfer_id = completed["request_id"], completed["transfer_id"]
    with world.b.engine.connect() as conn:
        row = conn.execute(select(TRANSFERS).where(TRANSFERS.c.transfer_id == transfer_id)).one()
        chunks = (
            conn.execute(
                select(TRANSFER_CHUNKS.c.data)
                .where(TRANSFER_CHUNKS.c.transfer_id == transfer_id)
                .order_by(TRANSFER_CHUNKS.c.seq)
            )
            .scalars()
            .all()
        )
    frames = Transfer(
        common_pb2.SignedEnvelope(
            body=row.header, signer_district=PRIOR, signature=row.header_signature
        ),
        row.wrapped_key,
        b"".join(chunks),
        row.trailer_signature,
        None,  # type: ignore[arg-type]
    ).frames()
    with unchanged(world):
        delivery_receipt = deliver(world, frames)  # B's signed DeliveryReceipt, as A got it
    a_from_b = world.peer(world.a, world.b.enrolled.identity.tls)
    b_from_a = world.peer(world.b, world.a.enrolled.identity.tls)
    # A's signed RequestReceipt for a request B really sends (that request is B's own change).
    fresh = records_request(request_id=new_id())
    request_receipt = a_from_b.SubmitRequest(
        sign(world.b.enrolled.identity, envelope.LABEL_REQUEST, fresh), timeout=RPC_TIMEOUT
    )
    assert request_receipt.signer_district == PRIOR
    with unchanged(world):
        for call, message in [
            (a_from_b.SubmitRequest, delivery_receipt),
            (a_from_b.NotifyImport, delivery_receipt),
            (a_from_b.PostMessage, delivery_receipt),
            (b_from_a.SubmitDecision, request_receipt),
            (b_from_a.PostMessage, request_receipt),
        ]:
            refused(lambda: call(message, timeout=RPC_TIMEOUT), Code.INVALID_ARGUMENT)
    assert request_id


# --- time ----------------------------------------------------------------------------------------


def test_a_request_past_its_expiry_or_without_one(world: World) -> None:
    b = world.b.enrolled.identity
    stub = world.peer(world.a, b.tls)
    now = utc_now()
    expired = records_request(request_id=new_id(), created_offset=timedelta(days=-31))
    from_the_future = records_request(request_id=new_id(), created_offset=timedelta(hours=1))
    no_expiry = records_request(request_id=new_id())
    no_expiry.ClearField("expires_at")
    no_creation = records_request(request_id=new_id())
    no_creation.ClearField("created_at")
    backwards = records_request(request_id=new_id(), ttl=timedelta(seconds=-1), now=now)
    with unchanged(world):
        for message in (expired, from_the_future, no_expiry, no_creation, backwards):
            refused(
                lambda m=message: stub.SubmitRequest(
                    sign(b, envelope.LABEL_REQUEST, m), timeout=RPC_TIMEOUT
                ),
                Code.INVALID_ARGUMENT,
            )


# --- decisions that do not belong ----------------------------------------------------------------


def test_a_decision_for_a_request_the_sender_never_received(
    world: World, pending_request: str
) -> None:
    a = world.a.enrolled.identity
    b_from_a = world.peer(world.b, a.tls)
    never = decision(new_id(), approved=True, transfer_id=new_id(), tables=[common_pb2.HIS])
    with unchanged(world):
        refused(
            lambda: b_from_a.SubmitDecision(
                sign(a, envelope.LABEL_DECISION, never), timeout=RPC_TIMEOUT
            ),
            Code.PERMISSION_DENIED,
        )
        # B's real request, decided by C, which B never asked.
        by_c = decision(
            pending_request,
            prior=ATTACKER,
            approved=False,
            reason=common_pb2.OTHER,
            reason_text="x",
        )
        refused(
            lambda: world.peer(world.b, world.c.identity.tls).SubmitDecision(
                sign(world.c.identity, envelope.LABEL_DECISION, by_c), timeout=RPC_TIMEOUT
            ),
            Code.PERMISSION_DENIED,
        )
        # ...or decided by C in A's name.
        in_a_name = decision(
            pending_request, approved=False, reason=common_pb2.OTHER, reason_text="x"
        )
        refused(
            lambda: world.peer(world.b, world.c.identity.tls).SubmitDecision(
                sign(world.c.identity, envelope.LABEL_DECISION, in_a_name), timeout=RPC_TIMEOUT
            ),
            Code.PERMISSION_DENIED,
        )
    assert get(world.b, pending_request).summary.status == Status.PENDING


# --- cross-tenant --------------------------------------------------------------------------------


def test_cross_tenant_access_to_another_district_s_request(
    world: World, completed, pending_request: str
) -> None:
    """C (a registered district with requests of its own) names B's and A's request ids;
    A and B also try each other's role on their own shared request."""
    c = world.c.identity
    a_from_c, b_from_c = world.peer(world.a, c.tls), world.peer(world.b, c.tls)
    a_from_b = world.peer(world.a, world.b.enrolled.identity.tls)
    b_from_a = world.peer(world.b, world.a.enrolled.identity.tls)
    a, b = world.a.enrolled.identity, world.b.enrolled.identity
    done_id, transfer_id = completed["request_id"], completed["transfer_id"]
    attempts = [
        # C takes over the request id of B's request for its own request to A.
        lambda: a_from_c.SubmitRequest(
            sign(
                c,
                envelope.LABEL_REQUEST,
                records_request(
                    request_id=pending_request,
                    requesting=ATTACKER,
                    requesting_school=ATTACKER_SCHOOL,
                ),
            ),
            timeout=RPC_TIMEOUT,
        ),
        lambda: b_from_c.SubmitDecision(
            sign(
                c,
                envelope.LABEL_DECISION,
                decision(pending_request, prior=ATTACKER, approved=True, transfer_id=new_id()),
            ),
            timeout=RPC_TIMEOUT,
        ),
        lambda: a_from_c.NotifyImport(
            sign(
                c,
                envelope.LABEL_IMPORT_NOTICE,
                import_notice(done_id, transfer_id, requesting=ATTACKER),
            ),
            timeout=RPC_TIMEOUT,
        ),
        lambda: a_from_c.PostMessage(
            sign(
                c,
                envelope.LABEL_MESSAGE,
                thread_message(pending_request, sender=ATTACKER, to=PRIOR),
            ),
            timeout=RPC_TIMEOUT,
        ),
        lambda: b_from_c.PostMessage(
            sign(
                c, envelope.LABEL_MESSAGE, thread_message(pending_request, sender=ATTACKER, to=NEW)
            ),
            timeout=RPC_TIMEOUT,
        ),
        lambda: b_from_c.GetDeliveryOffset(
            peer_pb2.DeliveryOffsetRequest(transfer_id=transfer_id), timeout=RPC_TIMEOUT
        ),
        # Role confusion between the two parties: B deciding, A importing.
        lambda: a_from_b.SubmitDecision(
            sign(
                b,
                envelope.LABEL_DECISION,
                decision(
                    pending_request,
                    prior=NEW,
                    requesting=PRIOR,
                    approved=False,
                    reason=common_pb2.OTHER,
                    reason_text="x",
                ),
            ),
            timeout=RPC_TIMEOUT,
        ),
        lambda: b_from_a.NotifyImport(
            sign(
                a,
                envelope.LABEL_IMPORT_NOTICE,
                import_notice(done_id, transfer_id, requesting=PRIOR),
            ),
            timeout=RPC_TIMEOUT,
        ),
    ]
    with unchanged(world):
        for attempt in attempts:
            assert refused(attempt, Code.PERMISSION_DENIED).details() == "not authorized"
    assert get(world.b, pending_request).summary.status == Status.PENDING


# --- revoked and rotated-away identities, against every RPC --------------------------------------


def every_rpc(world: World, target, tls, signer) -> list:
    stub = world.peer(target, tls)
    rid = new_id()

    def frames():
        yield peer_pb2.DeliveryFrame(ciphertext=b"x")

    return [
        lambda: stub.SubmitRequest(
            sign(
                signer,
                envelope.LABEL_REQUEST,
                records_request(
                    request_id=rid, requesting=ATTACKER, requesting_school=ATTACKER_SCHOOL
                ),
            ),
            timeout=RPC_TIMEOUT,
        ),
        lambda: stub.SubmitDecision(
            sign(signer, envelope.LABEL_DECISION, decision(rid, prior=ATTACKER)),
            timeout=RPC_TIMEOUT,
        ),
        lambda: stub.DeliverRecords(frames(), timeout=RPC_TIMEOUT),
        lambda: stub.GetDeliveryOffset(
            peer_pb2.DeliveryOffsetRequest(transfer_id=rid), timeout=RPC_TIMEOUT
        ),
        lambda: stub.PostMessage(
            sign(signer, envelope.LABEL_MESSAGE, thread_message(rid, sender=ATTACKER, to=NEW)),
            timeout=RPC_TIMEOUT,
        ),
        lambda: stub.NotifyImport(
            sign(
                signer,
                envelope.LABEL_IMPORT_NOTICE,
                import_notice(rid, new_id(), requesting=ATTACKER),
            ),
            timeout=RPC_TIMEOUT,
        ),
    ]


TTL = 1  # seconds: how long A and B may keep believing a cached directory entry


@pytest.fixture
def short_ttl_world(tmp_path) -> World:
    w = build_world(tmp_path, directory_ttl_seconds=TTL)
    try:
        yield w
    finally:
        w.close()


def _a_and_b_have_seen(world: World, tls, signer) -> None:
    """C calls once, so A and B have C's current entry cached (the worst case for revocation)."""
    for target in (world.a, world.b):
        stub = world.peer(target, tls)
        got = stub.GetDeliveryOffset(
            peer_pb2.DeliveryOffsetRequest(transfer_id=new_id()), timeout=RPC_TIMEOUT
        )
        assert got.offset == 0


def test_a_revoked_district_is_refused_on_every_rpc(short_ttl_world: World) -> None:
    world = short_ttl_world
    c = world.c.identity
    _a_and_b_have_seen(world, c.tls, c)
    assert world.registry.service.revoke(ATTACKER)  # its certificate is still valid and CA-signed
    time.sleep(TTL + 0.2)
    with unchanged(world):
        for target in (world.a, world.b):
            for call in every_rpc(world, target, c.tls, c):
                assert refused(call, Code.PERMISSION_DENIED).details() == "not authorized"


def test_an_old_certificate_after_update_entry_rotated_the_key(short_ttl_world: World) -> None:
    world = short_ttl_world
    old = world.c.identity
    _a_and_b_have_seen(world, old.tls, old)
    update_district_entry(world.c.config, rotate_tls_key=True, clock=world.registry.clock)
    new = load_identity(world.c.config.data_dir)
    assert new.tls.spki_sha256() != old.tls.spki_sha256()
    # Once A and B have seen the new key (a key mismatch makes them look the entry
    # up again at once) -- or, without that, once their cached entry is older than
    # the TTL -- the old certificate, still CA-signed and unexpired, is refused.
    _a_and_b_have_seen(world, new.tls, new)
    with unchanged(world):
        for target in (world.a, world.b):
            for call in every_rpc(world, target, old.tls, old):
                assert refused(call, Code.PERMISSION_DENIED).details() == "not authorized"
    update_district_entry(world.c.config, rotate_tls_key=True, clock=world.registry.clock)
    time.sleep(TTL + 0.2)
    with unchanged(world):
        for target in (world.a, world.b):
            for call in every_rpc(world, target, new.tls, new):
                assert refused(call, Code.PERMISSION_DENIED).details() == "not authorized"
