"""Signing-key rotation keeps what was signed before it verifiable (issue 17).

The registry lists a district's previous signing keys in its entry (with the time
each was retired) for ``previous_signing_key_days``; a verifier accepts a
signature by one only on an item dated before it was retired. Real registry, real
districts, real mTLS; times come from the registry's injected clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from protos.rt.v1 import peer_pb2, registrar_pb2
from rt_client.crypto import envelope
from rt_client.directory import verify_entry
from rt_client.errors import IntegrityError
from rt_client.identity import load_identity
from rt_client.rotation import rotate_keys
from rt_client.signed_messages import open_message_by, sign_message
from tests.harness.flow import (
    Status,
    add_student,
    create_request,
    import_,
    small_records,
    wait_status,
)
from tests.harness.world import World

DAY = 24 * 3600.0


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    w = World.start(tmp_path)
    yield w
    w.close()


def test_a_transfer_sealed_and_signed_before_the_rotation_still_imports(world: World) -> None:
    p = world.pair()
    a = p.start(p.a)
    b = p.start(p.b)
    add_student(p.a, "A1", small_records(5))
    add_student(p.b, "B1")
    request_id = create_request(p)
    b.stop()
    p.started.remove(b)
    p.a.rpc.ApproveRequest(
        registrar_pb2.ApproveRequestRequest(request_id=request_id, actor="alice"), timeout=15
    )
    # A sealed the transfer and signed its header with its current key; B is off.
    a.stop()
    p.started.remove(a)
    rotation = rotate_keys(a.enrolled.config, signing=True)
    assert rotation.signing
    p.start(a)
    p.start(b)
    # B verifies the header A signed before the rotation by A's previous key.
    wait_status(p.b, request_id, Status.DATA_RECEIVED)
    result = import_(p, request_id)
    assert not result.already_imported and result.imported
    wait_status(p.a, request_id, Status.COMPLETE)


def test_the_registry_keeps_the_old_key_with_its_retirement_and_verifiers_date_it(
    world: World,
) -> None:
    enrolled = world.enroll("1964733")
    config = enrolled.config
    old_key = load_identity(config.data_dir).signing_key
    reg = world.registry

    def entry():  # type: ignore[no-untyped-def]
        return verify_entry(reg.service.lookup("1964733"), reg.signing_key, reg.clock())

    rotate_keys(config, signing=True)
    retired_at = reg.clock()
    current = entry()
    assert [k.public_key for k in current.previous_signing_keys] == [
        old_key.public_key().public_bytes_raw()
    ]
    assert current.previous_signing_keys[0].not_after == retired_at
    from rt_server.keys_cli import _facts  # what `rt keys show` prints

    shown = _facts(str(config.data_dir / "district.toml"))["previous_signing_keys"]
    assert [k["public_key"] for k in shown] == [old_key.public_key().public_bytes_raw().hex()]

    def message(sent: timedelta):  # type: ignore[no-untyped-def]
        msg = peer_pb2.ThreadMessage(message_id="m", from_district="1964733", body="hi")
        msg.sent_at.FromDatetime(retired_at + sent)
        return sign_message(envelope.LABEL_MESSAGE, msg, "1964733", old_key)

    def open_(signed, now):  # type: ignore[no-untyped-def]
        return open_message_by(
            envelope.LABEL_MESSAGE,
            signed,
            signer="1964733",
            public_key=current.signing_public_key,
            previous=current.previous_signing_keys,
            now=now,
            message_type=peer_pb2.ThreadMessage,
        )

    # Signed an hour before the rotation: verifies, days later too.
    assert open_(message(timedelta(hours=-1)), retired_at + timedelta(days=3)).body == "hi"
    # Dated an hour after the key was retired (a stolen old key): refused.
    with pytest.raises(IntegrityError):
        open_(message(timedelta(hours=1)), retired_at + timedelta(hours=2))
    # After the window (14 days by default) the old key is not accepted at all ...
    with pytest.raises(IntegrityError):
        open_(message(timedelta(hours=-1)), retired_at + timedelta(days=15))
    # ... and the registry's re-signed entry no longer lists it.
    reg.clock.advance(15 * DAY)
    assert entry().previous_signing_keys == ()
    # A rotation of the other keys only changes nothing about signing keys.
    rotate_keys(config, hpke=True, clock=reg.clock)
    assert entry().previous_signing_keys == ()
