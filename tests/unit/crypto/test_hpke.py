"""HPKE key wrap (RFC 9180 base mode): suites, key serialization, wrap/unwrap attacks."""

from __future__ import annotations

import hashlib
import os

import pytest

from rt_client.crypto.hpke import (
    DEFAULT_SUITE,
    FALLBACK_SUITE,
    SUPPORTED_SUITES,
    HpkePrivateKey,
    HpkePublicKey,
    HpkeSuite,
    key_id,
    suite_from_name,
    suite_from_names,
    unwrap_key,
    wrap_key,
)
from rt_client.errors import IntegrityError, InvalidInput

H = hashlib.sha256(b"serialized TransferHeader").digest()
INPUT_KEY = os.urandom(32)

suites = pytest.mark.parametrize("suite", SUPPORTED_SUITES, ids=lambda s: s.kem)


@pytest.fixture(scope="module")
def keys() -> dict[HpkeSuite, HpkePrivateKey]:
    return {suite: HpkePrivateKey.generate(suite) for suite in SUPPORTED_SUITES}


def test_suite_names() -> None:
    assert DEFAULT_SUITE.name == "MLKEM768_X25519/HKDF_SHA256/AES_256_GCM"
    assert FALLBACK_SUITE.name == "X25519/HKDF_SHA256/AES_256_GCM"
    assert suite_from_names("MLKEM768_X25519", "HKDF_SHA256", "AES_256_GCM") == DEFAULT_SUITE
    assert suite_from_name(FALLBACK_SUITE.name) == FALLBACK_SUITE


@pytest.mark.parametrize(
    "names",
    [
        ("X25519", "HKDF_SHA256", "AES_128_GCM"),
        ("P256", "HKDF_SHA256", "AES_256_GCM"),
        ("MLKEM768_X25519", "HKDF_SHA512", "AES_256_GCM"),
        ("x25519", "hkdf_sha256", "aes_256_gcm"),
        ("__class__", "HKDF_SHA256", "AES_256_GCM"),
        ("", "", ""),
    ],
)
def test_unknown_suites_are_refused(names: tuple[str, str, str]) -> None:
    with pytest.raises(InvalidInput):
        suite_from_names(*names)
    with pytest.raises(InvalidInput):
        suite_from_name("/".join(names))
    with pytest.raises(InvalidInput):
        HpkePrivateKey.generate(HpkeSuite(*names))


@pytest.mark.parametrize("name", ["", "X25519/HKDF_SHA256", "X25519/HKDF_SHA256/AES_256_GCM/x"])
def test_malformed_suite_name(name: str) -> None:
    with pytest.raises(InvalidInput):
        suite_from_name(name)


@suites
def test_wrap_unwrap(suite: HpkeSuite, keys: dict[HpkeSuite, HpkePrivateKey]) -> None:
    receiver = keys[suite]
    wrapped = wrap_key(INPUT_KEY, receiver.public_key(), H)
    assert unwrap_key(wrapped, receiver, H) == INPUT_KEY
    # Base mode encapsulates afresh each time.
    assert wrap_key(INPUT_KEY, receiver.public_key(), H) != wrapped


@suites
def test_wrong_receiver_fails(suite: HpkeSuite, keys: dict[HpkeSuite, HpkePrivateKey]) -> None:
    wrapped = wrap_key(INPUT_KEY, keys[suite].public_key(), H)
    with pytest.raises(IntegrityError) as info:
        unwrap_key(wrapped, HpkePrivateKey.generate(suite), H)
    assert str(info.value) == "verification failed"


def test_wrong_suite_receiver_fails(keys: dict[HpkeSuite, HpkePrivateKey]) -> None:
    for sender_suite, receiver_suite in [
        (DEFAULT_SUITE, FALLBACK_SUITE),
        (FALLBACK_SUITE, DEFAULT_SUITE),
    ]:
        wrapped = wrap_key(INPUT_KEY, keys[sender_suite].public_key(), H)
        with pytest.raises(IntegrityError):
            unwrap_key(wrapped, keys[receiver_suite], H)


@suites
def test_wrong_header_digest_fails(suite: HpkeSuite, keys: dict[HpkeSuite, HpkePrivateKey]) -> None:
    wrapped = wrap_key(INPUT_KEY, keys[suite].public_key(), H)
    for other in (hashlib.sha256(b"another header").digest(), H[:-1], H + b"\x00", b""):
        with pytest.raises(IntegrityError):
            unwrap_key(wrapped, keys[suite], other)


@suites
def test_tampered_wrapped_key_fails(
    suite: HpkeSuite, keys: dict[HpkeSuite, HpkePrivateKey]
) -> None:
    wrapped = wrap_key(INPUT_KEY, keys[suite].public_key(), H)
    enc_size = len(wrapped) - 48
    # enc (ML-KEM ciphertext, X25519 share), sealed key, tag.
    for index in {0, enc_size - 33, enc_size - 1, enc_size, len(wrapped) - 17, len(wrapped) - 1}:
        tampered = bytearray(wrapped)
        tampered[index] ^= 0x01
        with pytest.raises(IntegrityError):
            unwrap_key(bytes(tampered), keys[suite], H)
    for malformed in (wrapped[:-1], wrapped + b"\x00", b"", wrapped[:enc_size]):
        with pytest.raises(IntegrityError):
            unwrap_key(malformed, keys[suite], H)


def test_hybrid_needs_both_halves(keys: dict[HpkeSuite, HpkePrivateKey]) -> None:
    """A receiver key sharing only the ML-KEM or only the X25519 half cannot unwrap."""
    receiver = keys[DEFAULT_SUITE]
    raw = receiver.private_bytes()
    wrapped = wrap_key(INPUT_KEY, receiver.public_key(), H)
    other = HpkePrivateKey.generate(DEFAULT_SUITE).private_bytes()
    for mixed in (raw[:64] + other[64:], other[:64] + raw[64:]):
        with pytest.raises(IntegrityError):
            unwrap_key(wrapped, HpkePrivateKey.from_bytes(DEFAULT_SUITE, mixed), H)


@suites
def test_key_serialization_round_trips(
    suite: HpkeSuite, keys: dict[HpkeSuite, HpkePrivateKey]
) -> None:
    private = keys[suite]
    public_size, private_size = (1184 + 32, 64 + 32) if suite == DEFAULT_SUITE else (32, 32)
    raw_public = private.public_key().public_bytes()
    raw_private = private.private_bytes()
    assert (len(raw_public), len(raw_private)) == (public_size, private_size)

    public = HpkePublicKey.from_bytes(suite, raw_public)
    assert public == private.public_key()
    assert public.public_bytes() == raw_public
    reloaded = HpkePrivateKey.from_bytes(suite, raw_private)
    assert reloaded.private_bytes() == raw_private
    assert reloaded.public_key() == public

    # A key loaded from bytes works on both ends.
    assert unwrap_key(wrap_key(INPUT_KEY, public, H), reloaded, H) == INPUT_KEY


@suites
def test_key_id(suite: HpkeSuite, keys: dict[HpkeSuite, HpkePrivateKey]) -> None:
    public = keys[suite].public_key()
    expected = hashlib.sha256(suite.name.encode() + b"\x00" + public.public_bytes()).hexdigest()[
        :32
    ]
    assert key_id(suite, public.public_bytes()) == public.key_id() == expected


def test_key_id_depends_on_suite() -> None:
    raw = os.urandom(32)
    assert key_id(FALLBACK_SUITE, raw) != key_id(
        HpkeSuite("X25519", "HKDF_SHA256", "CHACHA20_POLY1305"), raw
    )


@suites
def test_malformed_keys_are_refused(
    suite: HpkeSuite, keys: dict[HpkeSuite, HpkePrivateKey]
) -> None:
    raw_public = keys[suite].public_key().public_bytes()
    raw_private = keys[suite].private_bytes()
    for bad in (raw_public[:-1], raw_public + b"\x00", b""):
        with pytest.raises(InvalidInput):
            HpkePublicKey.from_bytes(suite, bad)
    for bad in (raw_private[:-1], raw_private + b"\x00", b""):
        with pytest.raises(InvalidInput):
            HpkePrivateKey.from_bytes(suite, bad)
    # RFC 9180 section 7.1.4: an all-zero X25519 point gives an all-zero shared secret.
    with pytest.raises(InvalidInput):
        HpkePublicKey.from_bytes(suite, raw_public[:-32] + bytes(32))


def test_malformed_mlkem_public_key_is_refused(keys: dict[HpkeSuite, HpkePrivateKey]) -> None:
    raw_public = keys[DEFAULT_SUITE].public_key().public_bytes()
    # Coefficients of 0xFFF exceed q = 3329: FIPS 203 encapsulation key check.
    with pytest.raises(InvalidInput):
        HpkePublicKey.from_bytes(DEFAULT_SUITE, b"\xff" * 1184 + raw_public[1184:])


@suites
def test_wrap_refuses_bad_arguments(
    suite: HpkeSuite, keys: dict[HpkeSuite, HpkePrivateKey]
) -> None:
    public = keys[suite].public_key()
    for bad_key in (b"", bytes(31), bytes(33)):
        with pytest.raises(InvalidInput):
            wrap_key(bad_key, public, H)
    for bad_digest in (b"", H[:-1], H + b"\x00"):
        with pytest.raises(InvalidInput):
            wrap_key(INPUT_KEY, public, bad_digest)


def test_private_key_repr_hides_key_material(keys: dict[HpkeSuite, HpkePrivateKey]) -> None:
    for private in keys.values():
        text = repr(private)
        assert private.private_bytes().hex()[:16] not in text
        assert private.suite.name in text
