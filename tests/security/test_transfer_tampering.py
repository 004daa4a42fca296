"""Tampered, truncated, re-ordered, mis-addressed and replayed transfers, delivered to B for real.

B has an outbound request PENDING at A (made through the normal flow, left
undecided so A's own worker sends nothing). The attacker then streams
``DeliveryFrame``s to B's ``DeliverRecords`` itself:

- as a *man in the middle* would: A's genuine transfer with bytes changed, over
  A's connection (TLS itself stops a real MITM; this shows the layers beneath
  TLS stop it too: the trailer signature covers header, wrapped key and
  every ciphertext byte);
- as a *forger holding A's keys* would: the same tampering with the trailer
  signed again (and the header where sizes must match), so only HPKE and
  Cobblestone-256 stand between the bytes and B's database;
- as district C, with its own keys and connection.

Every attack must fail with the expected status and leave both databases as
they were. A cut stream keeps what arrived (so the sender can resume): that, and
only that, is the harmless difference a cut is allowed to leave.

Each attack runs against both ways B receives: stored frame by frame as they
come (a large delivery), and held in memory until it verifies (a small one,
``buffered_delivery_bytes``).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator

import grpc
import pytest

from protos.rt.v1 import common_pb2, peer_pb2
from rt_client import transfer as rtx
from rt_client.crypto import cobblestone as cb
from rt_server.core.tables import ALL_TABLES
from rt_server.store.schema import TRANSFER_CHUNKS, TRANSFERS
from scripts import samples
from tests.harness.flow import Status, add_student, approve, batches_of, get, settle, small_records
from tests.harness.world import NEW, PRIOR
from tests.security.conftest import (
    ATTACKER,
    RPC_TIMEOUT,
    Code,
    Transfer,
    World,
    build_world,
    forge_transfer,
    plaintext_of,
    refused,
    resign_trailer,
    seal_valid,
    transfer_header,
    unchanged,
)

# Three Cobblestone chunks and a bit: enough to reorder, duplicate and drop chunks.
ROWS_PER_TABLE = 100
FULL = cb.CHUNK_SIZE + cb.TAG_SIZE
PARTIAL = frozenset({TRANSFERS.name, TRANSFER_CHUNKS.name})


def batches() -> list:
    return batches_of(
        samples.sample_records(random.Random(42), {code: ROWS_PER_TABLE for code in ALL_TABLES})
    )


@pytest.fixture(
    scope="module", params=[0, None], ids=["stored-frame-by-frame", "held-until-verified"]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The shared world (conftest), its districts receiving each way in turn."""
    config = {} if request.param is None else {"buffered_delivery_bytes": request.param}
    w = build_world(tmp_path_factory.mktemp("world"), **config)
    add_student(w.a, "A1", small_records(1))
    add_student(w.b, "B1")
    yield w
    w.close()


def holds_deliveries_in_memory(world: World) -> bool:
    return world.b.enrolled.config.buffered_delivery_bytes > 0


@pytest.fixture(scope="module")
def records() -> list:
    return batches()


def new_id() -> str:
    return str(uuid.uuid4())


def deliver(world: World, frames: list[peer_pb2.DeliveryFrame], tls=None):
    stub = world.peer(world.b, tls or world.a.enrolled.identity.tls)
    return stub.DeliverRecords(iter(frames), timeout=RPC_TIMEOUT)


def chunk_bounds(ciphertext: bytes) -> list[tuple[int, int]]:
    """(start, end) of every Cobblestone chunk in ``ciphertext``."""
    out, pos = [], cb.HEADER_SIZE
    while pos < len(ciphertext):
        end = min(pos + FULL, len(ciphertext))
        out.append((pos, end))
        pos = end
    return out


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[index] ^= 1 << bit
    return bytes(b)


def assert_request_untouched(world: World, request_id: str) -> None:
    assert get(world.b, request_id).summary.status == Status.PENDING
    assert get(world.a, request_id).summary.status == Status.PENDING


# --- a genuine transfer goes through (the control) -----------------------------------------------


def test_control_a_genuine_transfer_from_the_attack_harness_is_accepted(
    world: World, pending_request: str, records
) -> None:
    """The harness itself is sound: untampered, the same frames are accepted."""
    t = seal_valid(world, pending_request, new_id(), records)
    receipt = deliver(world, t.frames())
    assert receipt.signer_district == NEW
    assert get(world.b, pending_request).summary.status == Status.DATA_RECEIVED


def test_a_transfer_in_the_previous_format_is_still_accepted(
    world: World, pending_request: str, records
) -> None:
    """Format version 1 (sealed before the upgrade, in flight): checked at its trailer, accepted."""
    t = seal_valid(world, pending_request, new_id(), records, format_version=1)
    assert t.header_message.format_version == 1
    # Its header's signature covers the header alone; a changed chunk is still refused.
    tampered = resign_trailer(
        t, world.a.enrolled.identity, ciphertext=flip(t.ciphertext, cb.HEADER_SIZE + 9)
    )
    with unchanged(world):
        refused(lambda: deliver(world, tampered.frames()), Code.INVALID_ARGUMENT)
    deliver(world, t.frames())
    assert get(world.b, pending_request).summary.status == Status.DATA_RECEIVED


def test_a_version_2_header_passed_off_as_version_1_is_refused(
    world: World, pending_request: str, records
) -> None:
    """The downgrade: a version 2 header's signature never verifies as version 1's, nor back."""
    t = seal_valid(world, pending_request, new_id(), records)
    old = seal_valid(world, pending_request, new_id(), records, format_version=1)
    # Version 2's signature with another wrapped key (the v1 transfer's, valid for B):
    swapped = Transfer(t.header, old.wrapped_key, t.ciphertext, t.trailer, t.header_message)
    # Version 1's header with version 2's label would need A's key: re-labelled by a forger
    # holding it, it claims version 1 under the version 2 signature, which must not pass.
    body = old.header.body
    relabelled = common_pb2.SignedEnvelope(
        body=body,
        signer_district=PRIOR,
        signature=rtx.sign_start(body, old.wrapped_key, world.a.enrolled.identity.signing_key),
    )
    as_v1 = Transfer(relabelled, old.wrapped_key, old.ciphertext, old.trailer, old.header_message)
    for attempt in (swapped, as_v1):
        with unchanged(world):
            refused(lambda a=attempt: deliver(world, a.frames()), Code.INVALID_ARGUMENT)
    assert_request_untouched(world, pending_request)


def test_a_changed_chunk_is_refused_as_it_arrives_not_at_the_trailer(
    world: World, pending_request: str, records
) -> None:
    """Version 2 decrypts and validates every frame as it comes: the refusal comes at once.

    The attacker keeps the stream open after the changed chunk; B answers
    without waiting for the rest, and keeps none of it.
    """
    t = seal_valid(world, pending_request, new_id(), records)
    tampered_ct = flip(t.ciphertext, chunk_bounds(t.ciphertext)[0][0] + 100)
    start, first, *_rest = Transfer(
        t.header, t.wrapped_key, tampered_ct, t.trailer, t.header_message
    ).frames(frame_bytes=cb.HEADER_SIZE + 2 * FULL)
    hold = threading.Event()

    def frames() -> Iterator[peer_pb2.DeliveryFrame]:
        yield start
        yield first
        hold.wait(RPC_TIMEOUT)  # the rest never comes while B is deciding

    stub = world.peer(world.b, world.a.enrolled.identity.tls)
    try:
        with unchanged(world):
            err = refused(lambda: stub.DeliverRecords(frames(), timeout=10), Code.INVALID_ARGUMENT)
    finally:
        hold.set()
    assert err.details() == "refused"
    assert_request_untouched(world, pending_request)


# --- one bit flipped, anywhere -------------------------------------------------------------------


def _where(t: Transfer) -> dict[str, int]:
    """Byte offsets in the ciphertext of each part of the Cobblestone layout."""
    chunks = chunk_bounds(t.ciphertext)
    return {
        "salt": 3,
        "commitment": cb.SALT_SIZE + 5,
        "first chunk": chunks[0][0] + 100,
        "middle chunk": chunks[1][0] + 7,
        "tag of a full chunk": chunks[0][1] - 1,
        "final chunk": chunks[-1][0] + 1,
        "tag of the final chunk": len(t.ciphertext) - 3,
    }


@pytest.mark.parametrize(
    "part",
    [
        "salt",
        "commitment",
        "first chunk",
        "middle chunk",
        "tag of a full chunk",
        "final chunk",
        "tag of the final chunk",
    ],
)
@pytest.mark.parametrize("as_", ["mitm", "forger"])
def test_one_bit_flipped_in_the_ciphertext(
    world: World, pending_request: str, records, part: str, as_: str
) -> None:
    t = seal_valid(world, pending_request, new_id(), records)
    tampered_ct = flip(t.ciphertext, _where(t)[part], bit=5)
    if as_ == "mitm":
        tampered = Transfer(t.header, t.wrapped_key, tampered_ct, t.trailer, t.header_message)
    else:  # A's own signing key vouches for the changed bytes: only the AEAD can tell
        tampered = resign_trailer(t, world.a.enrolled.identity, ciphertext=tampered_ct)
    with unchanged(world):
        err = refused(lambda: deliver(world, tampered.frames()), Code.INVALID_ARGUMENT)
    assert err.details() == "refused"
    assert_request_untouched(world, pending_request)


@pytest.mark.parametrize("as_", ["mitm", "forger"])
def test_one_bit_flipped_in_the_wrapped_key(
    world: World, pending_request: str, records, as_: str
) -> None:
    t = seal_valid(world, pending_request, new_id(), records)
    for index in (0, len(t.wrapped_key) // 2, len(t.wrapped_key) - 1):  # KEM share, ..., AEAD tag
        wrapped = flip(t.wrapped_key, index)
        if as_ == "mitm":
            tampered = Transfer(t.header, wrapped, t.ciphertext, t.trailer, t.header_message)
        else:
            tampered = resign_trailer(t, world.a.enrolled.identity, wrapped_key=wrapped)
        with unchanged(world):
            refused(lambda: deliver(world, tampered.frames()), Code.INVALID_ARGUMENT)
    assert_request_untouched(world, pending_request)


def test_one_bit_flipped_in_the_header_or_its_signature(
    world: World, pending_request: str, records
) -> None:
    t = seal_valid(world, pending_request, new_id(), records)
    for field in ("body", "signature"):
        for index in (0, len(getattr(t.header, field)) // 2, len(getattr(t.header, field)) - 1):
            header = common_pb2.SignedEnvelope()
            header.CopyFrom(t.header)
            setattr(header, field, flip(getattr(header, field), index))
            tampered = Transfer(header, t.wrapped_key, t.ciphertext, t.trailer, t.header_message)
            with unchanged(world):
                refused(lambda: deliver(world, tampered.frames()), Code.INVALID_ARGUMENT)
    assert_request_untouched(world, pending_request)


def test_one_bit_flipped_in_the_trailer(world: World, pending_request: str, records) -> None:
    t = seal_valid(world, pending_request, new_id(), records)
    for index in (0, 31, 32, 63):  # R and S halves of the Ed25519 signature
        tampered = Transfer(
            t.header, t.wrapped_key, t.ciphertext, flip(t.trailer, index), t.header_message
        )
        with unchanged(world):
            refused(lambda: deliver(world, tampered.frames()), Code.INVALID_ARGUMENT)
    assert_request_untouched(world, pending_request)


# --- chunks reordered, duplicated, dropped; trailing data ----------------------------------------


def forged_by_a(
    world: World,
    request_id: str,
    records,
    *,
    transfer_id: str | None = None,
    extra_plaintext: int = 0,
    key_for: str = NEW,
) -> Transfer:
    """A transfer forged with A's own keys: a header naming B, signed by A, the key
    wrapped for ``key_for``. ``extra_plaintext`` makes the header declare more (or
    fewer) bytes than it encrypts, so a ciphertext with chunks added or removed has
    exactly the length the signed header promises: only Cobblestone can notice."""
    plaintext = plaintext_of(records)
    header = transfer_header(
        transfer_id=transfer_id or new_id(),
        request_id=request_id,
        sender=PRIOR,
        receiver=world.entry(NEW),
        tables={b.table: ROWS_PER_TABLE for b in records},
        plaintext_bytes=len(plaintext) + extra_plaintext,
    )
    return forge_transfer(
        plaintext=plaintext,
        header=header,
        signer=world.a.enrolled.identity,
        receiver=world.entry(key_for),
    )


def test_chunks_reordered(world: World, pending_request: str, records) -> None:
    t = seal_valid(world, pending_request, new_id(), records)
    (s0, e0), (s1, e1), *_ = chunk_bounds(t.ciphertext)
    swapped = t.ciphertext[:s0] + t.ciphertext[s1:e1] + t.ciphertext[s0:e0] + t.ciphertext[e1:]
    assert len(swapped) == len(t.ciphertext)
    for tampered in (
        Transfer(t.header, t.wrapped_key, swapped, t.trailer, t.header_message),
        resign_trailer(t, world.a.enrolled.identity, ciphertext=swapped),
    ):
        with unchanged(world):
            refused(lambda: deliver(world, tampered.frames()), Code.INVALID_ARGUMENT)
    assert_request_untouched(world, pending_request)


def test_a_chunk_duplicated(world: World, pending_request: str, records) -> None:
    a = world.a.enrolled.identity
    # Length-preserving: chunk 0 written over chunk 1.
    t = seal_valid(world, pending_request, new_id(), records)
    (s0, e0), (s1, e1), *_ = chunk_bounds(t.ciphertext)
    doubled = t.ciphertext[:e0] + t.ciphertext[s0:e0] + t.ciphertext[e1:]
    # Length-changing, with a header that declares one chunk more.
    f = forged_by_a(world, pending_request, records, extra_plaintext=cb.CHUNK_SIZE)
    (g0, h0), *_ = chunk_bounds(f.ciphertext)
    inserted = f.ciphertext[:h0] + f.ciphertext[g0:h0] + f.ciphertext[h0:]
    assert len(inserted) == f.header_message.ciphertext_bytes
    for tampered in (
        Transfer(t.header, t.wrapped_key, doubled, t.trailer, t.header_message),
        resign_trailer(t, a, ciphertext=doubled),
        resign_trailer(f, a, ciphertext=inserted),
        Transfer(f.header, f.wrapped_key, inserted, f.trailer, f.header_message),
    ):
        with unchanged(world):
            refused(lambda: deliver(world, tampered.frames()), Code.INVALID_ARGUMENT)
    assert_request_untouched(world, pending_request)


def test_a_chunk_dropped(world: World, pending_request: str, records) -> None:
    a = world.a.enrolled.identity
    t = seal_valid(world, pending_request, new_id(), records)
    _, (s1, e1), *_ = chunk_bounds(t.ciphertext)
    shorter = t.ciphertext[:s1] + t.ciphertext[e1:]
    f = forged_by_a(world, pending_request, records, extra_plaintext=-cb.CHUNK_SIZE)
    _, (g1, h1), *_ = chunk_bounds(f.ciphertext)
    dropped = f.ciphertext[:g1] + f.ciphertext[h1:]
    assert len(dropped) == f.header_message.ciphertext_bytes
    for tampered in (
        Transfer(t.header, t.wrapped_key, shorter, t.trailer, t.header_message),
        resign_trailer(t, a, ciphertext=shorter),
        resign_trailer(f, a, ciphertext=dropped),
    ):
        with unchanged(world):
            refused(lambda: deliver(world, tampered.frames()), Code.INVALID_ARGUMENT)
    assert_request_untouched(world, pending_request)


def test_the_final_chunk_dropped(world: World, pending_request: str, records) -> None:
    a = world.a.enrolled.identity
    t = seal_valid(world, pending_request, new_id(), records)
    last_start, _ = chunk_bounds(t.ciphertext)[-1]
    cut = t.ciphertext[:last_start]
    # The forger declares exactly the bytes of the full chunks that remain.
    full_plaintext = (last_start - cb.HEADER_SIZE) // FULL * cb.CHUNK_SIZE
    f = forged_by_a(world, pending_request, records, extra_plaintext=0)
    f_cut = f.ciphertext[: chunk_bounds(f.ciphertext)[-1][0]]
    for tampered in (
        Transfer(t.header, t.wrapped_key, cut, t.trailer, t.header_message),
        resign_trailer(t, a, ciphertext=cut),
        resign_trailer(f, a, ciphertext=f_cut),
    ):
        with unchanged(world):
            refused(lambda: deliver(world, tampered.frames()), Code.INVALID_ARGUMENT)
    assert full_plaintext > 0
    assert_request_untouched(world, pending_request)


def test_trailing_data_after_the_final_chunk(world: World, pending_request: str, records) -> None:
    a = world.a.enrolled.identity
    t = seal_valid(world, pending_request, new_id(), records)
    longer = t.ciphertext + b"\x00" * 7
    # The forger's header declares the 7 bytes too.
    f = forged_by_a(world, pending_request, records, extra_plaintext=7)
    padded = f.ciphertext + b"\x00" * 7
    assert len(padded) == f.header_message.ciphertext_bytes
    attempts = [
        t.frames(pieces=[t.ciphertext, b"\x00" * 7]),
        resign_trailer(t, a, ciphertext=longer).frames(),
        resign_trailer(f, a, ciphertext=padded).frames(),
        # A frame after the trailer.
        [*t.frames(), peer_pb2.DeliveryFrame(ciphertext=b"\x00")],
        # A second header mid-stream.
        [*t.frames(with_trailer=False)[:2], t.frames()[0], *t.frames()[2:]],
    ]
    for frames in attempts:
        with unchanged(world):
            refused(lambda frames=frames: deliver(world, frames), Code.INVALID_ARGUMENT)
    assert_request_untouched(world, pending_request)


# --- cut streams: what arrived is kept for the resume, nothing else ------------------------------


def test_the_stream_cut_mid_delivery_keeps_only_the_partial_transfer(
    world: World, pending_request: str, records
) -> None:
    if holds_deliveries_in_memory(world):
        pytest.skip("a delivery held in memory keeps nothing of a cut stream (test_races.py)")
    t = seal_valid(world, pending_request, new_id(), records)
    frames = t.frames(frame_bytes=cb.CHUNK_SIZE)
    sent_two = threading.Event()

    def stream() -> Iterator[peer_pb2.DeliveryFrame]:
        yield from frames[:3]  # start + two ciphertext frames
        sent_two.set()
        threading.Event().wait(RPC_TIMEOUT)  # ...and then nothing: the link dies

    with unchanged(world, allow_b=PARTIAL) as guard:
        call = world.peer(world.b, world.a.enrolled.identity.tls).DeliverRecords.future(
            stream(), timeout=RPC_TIMEOUT
        )
        assert sent_two.wait(RPC_TIMEOUT)
        offset = _wait_offset(world, t, 2 * cb.CHUNK_SIZE)
        call.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            call.result()
    # The harmless difference, exactly: one RECEIVING transfer holding the two frames.
    assert offset == 2 * cb.CHUNK_SIZE
    assert guard.before is not None
    assert_request_untouched(world, pending_request)
    # A stream that ends without its trailer: kept likewise, and the request does not move.
    refused(
        lambda: deliver(world, t.frames(offset=offset, with_trailer=False)),
        Code.INVALID_ARGUMENT,
    )
    assert_request_untouched(world, pending_request)
    # And the sender's resume completes it: nothing the cut left was harmful.
    receipt = deliver(world, t.frames(offset=len(t.ciphertext)))
    assert receipt.signer_district == NEW
    assert get(world.b, pending_request).summary.status == Status.DATA_RECEIVED


def _wait_offset(world: World, t: Transfer, at_least: int) -> int:
    from tests.harness.flow import wait_until

    stub = world.peer(world.b, world.a.enrolled.identity.tls)
    transfer_id = t.header_message.transfer_id

    def probe() -> int:
        got = stub.GetDeliveryOffset(
            peer_pb2.DeliveryOffsetRequest(transfer_id=transfer_id), timeout=RPC_TIMEOUT
        )
        return got.offset if got.offset >= at_least else 0

    return int(wait_until("B to store the frames", probe))


# --- mis-addressed, re-labelled, foreign-signed --------------------------------------------------


def test_a_valid_transfer_for_district_c_delivered_to_b(
    world: World, pending_request: str, records
) -> None:
    t = seal_valid(world, pending_request, new_id(), records, receiver=ATTACKER)
    with unchanged(world):
        refused(lambda: deliver(world, t.frames()), Code.INVALID_ARGUMENT)
    assert_request_untouched(world, pending_request)


def test_a_transfer_encrypted_for_c_under_a_header_naming_b(
    world: World, pending_request: str, records
) -> None:
    """The header says B, the key is wrapped for C: B cannot unwrap it, and says so."""
    t = forged_by_a(world, pending_request, records, key_for=ATTACKER)
    with unchanged(world):
        refused(lambda: deliver(world, t.frames()), Code.INVALID_ARGUMENT)
    assert_request_untouched(world, pending_request)


def test_a_valid_transfer_re_sent_under_another_transfer_id(
    world: World, pending_request: str, records
) -> None:
    a = world.a.enrolled.identity
    t = seal_valid(world, pending_request, new_id(), records)
    # The header re-signed with a new transfer id: the key and payload are bound to the old H.
    relabelled = t.header_message.__class__()
    relabelled.CopyFrom(t.header_message)
    relabelled.transfer_id = new_id()
    body = relabelled.SerializeToString(deterministic=True)
    header = common_pb2.SignedEnvelope(
        body=body,
        signer_district=PRIOR,
        signature=rtx.sign_start(body, t.wrapped_key, a.signing_key),
    )
    moved = resign_trailer(Transfer(header, t.wrapped_key, t.ciphertext, t.trailer, relabelled), a)
    with unchanged(world):
        refused(lambda: deliver(world, moved.frames()), Code.INVALID_ARGUMENT)
    assert_request_untouched(world, pending_request)

    # Once the genuine one is in, the same records under another id are refused too,
    # and re-sending the genuine one changes nothing (the receipt was lost: same answer).
    first = deliver(world, t.frames())
    with unchanged(world):
        refused(lambda: deliver(world, moved.frames()), Code.FAILED_PRECONDITION)
        again = deliver(world, t.frames())
        assert again == first
        again = deliver(world, t.frames(offset=len(t.ciphertext)))
        assert again == first


def test_a_trailer_signed_by_a_district_other_than_the_tls_peer(
    world: World, pending_request: str, records
) -> None:
    t = seal_valid(world, pending_request, new_id(), records)
    by_c = resign_trailer(t, world.c.identity)
    with unchanged(world):
        refused(lambda: deliver(world, by_c.frames()), Code.INVALID_ARGUMENT)
    assert_request_untouched(world, pending_request)


def test_a_header_signed_by_a_but_sent_over_c_s_connection(
    world: World, pending_request: str, records
) -> None:
    t = seal_valid(world, pending_request, new_id(), records)
    with unchanged(world):
        refused(lambda: deliver(world, t.frames(), world.c.identity.tls), Code.PERMISSION_DENIED)
    assert_request_untouched(world, pending_request)


def test_district_c_delivering_for_a_request_it_is_not_party_to(
    world: World, pending_request: str, records
) -> None:
    """C's own keys, C's own connection, a perfectly sealed transfer: not C's request."""
    t = seal_valid(world, pending_request, new_id(), records, sender=world.c.identity)
    with unchanged(world):
        refused(lambda: deliver(world, t.frames(), world.c.identity.tls), Code.PERMISSION_DENIED)
        stub = world.peer(world.b, world.c.identity.tls)
        offset = stub.GetDeliveryOffset(
            peer_pb2.DeliveryOffsetRequest(transfer_id=t.header_message.transfer_id),
            timeout=RPC_TIMEOUT,
        )
        assert (offset.offset, offset.complete) == (0, False)
    assert_request_untouched(world, pending_request)


def test_a_replayed_delivery_of_an_imported_request_changes_nothing(world: World) -> None:
    """The genuine flow end to end, then A's own frames (as B stored them) sent again."""
    from tests.harness.flow import create_request, import_

    request_id = create_request(world.pair)
    approve(world.pair, request_id)
    import_(world.pair, request_id)
    settle(world.a, world.b)
    with world.b.engine.connect() as conn:
        from sqlalchemy import select

        row = conn.execute(select(TRANSFERS).where(TRANSFERS.c.request_id == request_id)).one()
        chunks = [
            c.data
            for c in conn.execute(
                select(TRANSFER_CHUNKS)
                .where(TRANSFER_CHUNKS.c.transfer_id == row.transfer_id)
                .order_by(TRANSFER_CHUNKS.c.seq)
            )
        ]
    header = common_pb2.SignedEnvelope(
        body=row.header, signer_district=PRIOR, signature=row.header_signature
    )
    ct = b"".join(chunks)
    t = Transfer(header, row.wrapped_key, ct, row.trailer_signature, None)  # type: ignore[arg-type]
    with unchanged(world):
        # From A: the answer to a re-send after a lost receipt (B's signed receipt
        # again), and nothing else: no second transfer, no status change.
        receipt = deliver(world, t.frames())
        assert receipt.signer_district == NEW
        # From C, A's frames are not C's to send.
        refused(lambda: deliver(world, t.frames(), world.c.identity.tls), Code.PERMISSION_DENIED)
    assert get(world.b, request_id).summary.status == Status.IMPORTED


def test_a_transfer_id_colliding_with_one_of_b_s_own_outbound_transfers(
    world: World, pending_request: str, records
) -> None:
    """B is also a prior district (A asked B for a student): A, as a sender to B,
    reuses the id of B's own outbound transfer. B's outbound transfer must stay
    exactly as it is, and nothing of A's is stored."""
    from protos.rt.v1 import registrar_pb2
    from tests.harness.flow import wait_status
    from tests.harness.world import NEW_SCHOOL

    world.a.rpc.AddStudent(
        registrar_pb2.AddStudentRequest(
            student=registrar_pb2.Student(
                local_id="A9",
                ssid="9876543210",
                legal_first_name="Zoë",
                legal_last_name="O'Brien",
                birth_date="2010-01-01",
                gender="F",
                school=world.a.school,
            ),
            actor="alice",
        ),
        timeout=RPC_TIMEOUT,
    )
    world.b.rpc.AddStudent(
        registrar_pb2.AddStudentRequest(
            student=registrar_pb2.Student(
                local_id="B9",
                ssid="9876543210",
                legal_first_name="Zoë",
                legal_last_name="O'Brien",
                birth_date="2010-01-01",
                gender="F",
                school=world.b.school,
            ),
            records=batches()[:1],
            actor="bob",
        ),
        timeout=RPC_TIMEOUT,
    )
    reverse = world.a.rpc.CreateRequest(
        registrar_pb2.CreateRequestRequest(
            student_local_id="A9", prior_school=NEW_SCHOOL, actor="alice"
        ),
        timeout=RPC_TIMEOUT,
    ).summary.request_id
    wait_status(world.b, reverse, Status.PENDING)
    world.b.rpc.ApproveRequest(
        registrar_pb2.ApproveRequestRequest(request_id=reverse, actor="bob"), timeout=RPC_TIMEOUT
    )
    wait_status(world.b, reverse, Status.SENT)
    settle(world.a, world.b)
    taken = get(world.b, reverse).transfer_id
    assert taken

    t = forged_by_a(world, pending_request, records, transfer_id=taken)
    with unchanged(world):
        refused(lambda: deliver(world, t.frames()), Code.INVALID_ARGUMENT)
    assert_request_untouched(world, pending_request)
