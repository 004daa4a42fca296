"""Signed envelopes: Ed25519 with one domain-separation label per message type."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rt_client.crypto import envelope
from rt_client.crypto.envelope import (
    KNOWN_LABELS,
    LABEL_DECISION,
    LABEL_REQUEST,
    LABEL_REQUEST_RECEIPT,
    Signed,
    ed25519_public_bytes,
    load_ed25519_private,
    load_ed25519_public,
    open_signed,
    seal,
    sign_body,
    verify_body,
)
from rt_client.errors import IntegrityError, InvalidInput

BODY = b"\x0a\x24serialized RecordsRequest \x00\xff bytes"


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


# --- Wycheproof Ed25519, through the verifier every envelope uses -------------------


def test_ed25519_vector_file_is_the_published_one(ed25519_file: dict[str, Any]) -> None:
    tests = [t for g in ed25519_file["testGroups"] for t in g["tests"]]
    assert len(tests) == ed25519_file["numberOfTests"] == 151


def test_ed25519_vector(ed25519_vector: dict[str, Any]) -> None:
    public_key = bytes.fromhex(ed25519_vector["pk"])
    message = bytes.fromhex(ed25519_vector["msg"])
    signature = bytes.fromhex(ed25519_vector["sig"])
    if ed25519_vector["result"] == "valid":
        envelope._verify_raw(public_key, message, signature)
        envelope._verify_raw(load_ed25519_public(public_key), message, signature)
    else:
        assert ed25519_vector["result"] == "invalid"
        with pytest.raises(IntegrityError):
            envelope._verify_raw(public_key, message, signature)


# --- envelopes ----------------------------------------------------------------------


def test_sign_and_verify(key: Ed25519PrivateKey) -> None:
    signature = sign_body(LABEL_REQUEST, BODY, key)
    assert len(signature) == 64
    verify_body(LABEL_REQUEST, BODY, signature, ed25519_public_bytes(key))
    verify_body(LABEL_REQUEST, BODY, signature, key.public_key())


def test_signed_bytes_are_label_zero_body(key: Ed25519PrivateKey) -> None:
    """Pin the wire format: Ed25519 over label || 0x00 || body."""
    verify_body(LABEL_DECISION, BODY, key.sign(LABEL_DECISION + b"\x00" + BODY), key.public_key())
    with pytest.raises(IntegrityError):
        verify_body(LABEL_DECISION, BODY, key.sign(LABEL_DECISION + BODY), key.public_key())


def test_wrong_label_fails(key: Ed25519PrivateKey) -> None:
    signature = sign_body(LABEL_REQUEST, BODY, key)
    for other in KNOWN_LABELS - {LABEL_REQUEST}:
        with pytest.raises(IntegrityError):
            verify_body(other, BODY, signature, key.public_key())


def test_flipped_bits_fail(key: Ed25519PrivateKey) -> None:
    signature = sign_body(LABEL_REQUEST, BODY, key)
    for index in range(len(BODY)):
        body = bytearray(BODY)
        body[index] ^= 0x01
        with pytest.raises(IntegrityError):
            verify_body(LABEL_REQUEST, bytes(body), signature, key.public_key())
    for index in (0, 31, 32, 63):
        bad = bytearray(signature)
        bad[index] ^= 0x80
        with pytest.raises(IntegrityError):
            verify_body(LABEL_REQUEST, BODY, bytes(bad), key.public_key())
    for other_body in (BODY[:-1], BODY + b"\x00", b""):
        with pytest.raises(IntegrityError):
            verify_body(LABEL_REQUEST, other_body, signature, key.public_key())


def test_other_key_fails(key: Ed25519PrivateKey) -> None:
    signature = sign_body(LABEL_REQUEST, BODY, key)
    with pytest.raises(IntegrityError):
        verify_body(
            LABEL_REQUEST, BODY, signature, ed25519_public_bytes(Ed25519PrivateKey.generate())
        )


def test_malformed_signature_or_key_fails(key: Ed25519PrivateKey) -> None:
    signature = sign_body(LABEL_REQUEST, BODY, key)
    public = ed25519_public_bytes(key)
    for bad_signature in (b"", signature[:-1], signature + b"\x00", signature * 2):
        with pytest.raises(IntegrityError):
            verify_body(LABEL_REQUEST, BODY, bad_signature, public)
    for bad_key in (b"", public[:-1], public + b"\x00"):
        with pytest.raises(IntegrityError):
            verify_body(LABEL_REQUEST, BODY, signature, bad_key)


def test_unknown_label_is_refused(key: Ed25519PrivateKey) -> None:
    for label in (b"", b"rt/v1 records-request\x00", b"rt/v1 records", b"rt/v2 records-request"):
        with pytest.raises(InvalidInput):
            sign_body(label, BODY, key)
        with pytest.raises(InvalidInput):
            verify_body(label, BODY, bytes(64), key.public_key())


def test_labels_are_distinct_and_zero_free() -> None:
    assert len(KNOWN_LABELS) == 11
    for label in KNOWN_LABELS:
        assert label.startswith(b"rt/v1 ")
        assert b"\x00" not in label


def test_seal_and_open(key: Ed25519PrivateKey) -> None:
    signed = seal(LABEL_REQUEST_RECEIPT, BODY, "1964733", key)
    assert signed == Signed(body=BODY, signer="1964733", signature=signed.signature)
    assert open_signed(LABEL_REQUEST_RECEIPT, signed, ed25519_public_bytes(key)) == BODY
    with pytest.raises(IntegrityError):
        open_signed(LABEL_REQUEST, signed, key.public_key())
    forged = Signed(body=BODY + b"!", signer=signed.signer, signature=signed.signature)
    with pytest.raises(IntegrityError):
        open_signed(LABEL_REQUEST_RECEIPT, forged, key.public_key())


def test_key_helpers(key: Ed25519PrivateKey) -> None:
    raw = key.private_bytes_raw()
    loaded = load_ed25519_private(raw)
    assert (
        ed25519_public_bytes(loaded)
        == ed25519_public_bytes(key)
        == ed25519_public_bytes(key.public_key())
    )
    assert len(ed25519_public_bytes(key)) == 32
    for bad in (b"", raw[:-1], raw + b"\x00"):
        with pytest.raises(InvalidInput):
            load_ed25519_private(bad)
        with pytest.raises(InvalidInput):
            load_ed25519_public(bad)
