"""The transfer trailer, and the whole section-5 pipeline end to end."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rt_client.crypto import (
    KNOWN_LABELS,
    CobblestoneDecryptor,
    CobblestoneEncryptor,
    HpkePrivateKey,
    header_digest,
    sign_trailer,
    trailer_message,
    unwrap_key,
    verify_trailer,
    wrap_key,
)
from rt_client.crypto.trailer import TRAILER_LABEL
from rt_client.errors import IntegrityError, InvalidInput

HEADER = b"\x08\x01\x12\x10serialized TransferHeader"
H = hashlib.sha256(HEADER).digest()
WRAPPED = os.urandom(1168)
CT_SHA512 = hashlib.sha512(b"ciphertext").digest()


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_header_digest_is_sha256() -> None:
    assert header_digest(HEADER) == hashlib.sha256(HEADER).digest()


def test_trailer_message_layout() -> None:
    message = trailer_message(H, WRAPPED, CT_SHA512)
    assert message == b"rt/v1 transfer" + H + hashlib.sha256(WRAPPED).digest() + CT_SHA512
    assert len(message) == 14 + 32 + 32 + 64


def test_sign_and_verify(key: Ed25519PrivateKey) -> None:
    signature = sign_trailer(H, WRAPPED, CT_SHA512, key)
    verify_trailer(H, WRAPPED, CT_SHA512, signature, key.public_key())
    verify_trailer(H, WRAPPED, CT_SHA512, signature, key.public_key().public_bytes_raw())


def test_any_change_fails(key: Ed25519PrivateKey) -> None:
    signature = sign_trailer(H, WRAPPED, CT_SHA512, key)
    other_h = hashlib.sha256(HEADER + b"x").digest()
    other_ct = hashlib.sha512(b"ciphertext!").digest()
    cases = [
        (other_h, WRAPPED, CT_SHA512, signature),
        (H, WRAPPED[:-1], CT_SHA512, signature),
        (H, WRAPPED + b"\x00", CT_SHA512, signature),
        (H, WRAPPED, other_ct, signature),
        (H, WRAPPED, CT_SHA512, signature[:-1] + bytes([signature[-1] ^ 1])),
        (H, WRAPPED, CT_SHA512, signature[:-1]),
    ]
    for h, wrapped, ct_sha512, sig in cases:
        with pytest.raises(IntegrityError):
            verify_trailer(h, wrapped, ct_sha512, sig, key.public_key())
    with pytest.raises(IntegrityError):
        verify_trailer(H, WRAPPED, CT_SHA512, signature, Ed25519PrivateKey.generate().public_key())


def test_bad_digest_sizes_are_refused(key: Ed25519PrivateKey) -> None:
    for h, ct_sha512 in [(H[:-1], CT_SHA512), (H, CT_SHA512[:-1]), (CT_SHA512, H)]:
        with pytest.raises(InvalidInput):
            trailer_message(h, WRAPPED, ct_sha512)
        with pytest.raises(InvalidInput):
            sign_trailer(h, WRAPPED, ct_sha512, key)


def test_trailer_and_envelopes_cannot_be_confused() -> None:
    """No envelope's signed bytes (label || 0x00 || body) can start like a trailer."""
    for label in KNOWN_LABELS:
        assert not label.startswith(TRAILER_LABEL)
        assert not TRAILER_LABEL.startswith(label + b"\x00")


def test_section_5_pipeline_end_to_end(key: Ed25519PrivateKey) -> None:
    """Sender: H, wrap, encrypt with context H, trailer. Receiver: the reverse."""
    receiver = HpkePrivateKey.generate()
    plaintext = os.urandom(3 * 16384 + 999)

    # Sender (district A).
    h = header_digest(HEADER)
    input_key = os.urandom(32)
    wrapped = wrap_key(input_key, receiver.public_key(), h)
    enc = CobblestoneEncryptor(input_key, h)
    frames = [
        enc.header(),
        enc.update(plaintext[:40_000]),
        enc.update(plaintext[40_000:]),
        enc.finalize(),
    ]
    sent_digest = hashlib.sha512()
    for frame in frames:
        sent_digest.update(frame)
    signature = sign_trailer(h, wrapped, sent_digest.digest(), key)

    # Receiver (district B): hash as frames arrive, decrypt on the fly.
    got_h = header_digest(HEADER)
    dec = CobblestoneDecryptor(unwrap_key(wrapped, receiver, got_h), got_h)
    received_digest = hashlib.sha512()
    out = []
    for frame in frames:
        received_digest.update(frame)
        out.append(dec.update(frame))
    out.append(dec.finalize())
    verify_trailer(got_h, wrapped, received_digest.digest(), signature, key.public_key())
    assert b"".join(out) == plaintext

    # A different header (e.g. another receiver key id or row counts) breaks the key unwrap.
    with pytest.raises(IntegrityError):
        unwrap_key(wrapped, receiver, header_digest(HEADER + b"\x01"))
