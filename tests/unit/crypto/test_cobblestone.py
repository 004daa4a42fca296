"""Cobblestone-256 (c2sp.org/chunked-encryption): Wycheproof vectors, streaming, misuse."""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from rt_client.crypto import cobblestone
from rt_client.crypto.cobblestone import (
    CHUNK_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    CobblestoneDecryptor,
    CobblestoneEncryptor,
    decrypt,
    encrypt,
)
from rt_client.errors import IntegrityError, InvalidInput

FULL_CT = CHUNK_SIZE + TAG_SIZE
KEY = bytes(range(32))
CONTEXT = b"\x9a" * 32  # stands in for H, the header digest


# --- an independent reference, written from the spec text -------------------------


def reference_derive(key: bytes, salt: bytes, context: bytes) -> tuple[bytes, bytes, bytes]:
    okm = HKDFExpand(
        hashes.SHA512(), 76, b"c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM\x00" + salt + context
    ).derive(key)
    return okm[:32], okm[32:44], okm[44:]


def raw_chunks(body: bytes) -> list[bytes]:
    """Split a raw-mode ciphertext at the only possible chunk boundaries."""
    return [body[i : i + FULL_CT] for i in range(0, len(body), FULL_CT)] or [b""]


def raw_decrypt(aead_key: bytes, base_nonce: bytes, body: bytes) -> bytes:
    """Raw-mode decryption (spec appendix): raises ``InvalidTag``/``ValueError`` on failure."""
    aead = AESGCM(aead_key)
    chunks = raw_chunks(body)
    if len(chunks[-1]) >= FULL_CT:  # final chunk must be short: else truncated
        raise ValueError("truncated")
    if len(chunks[-1]) < TAG_SIZE:
        raise ValueError("final chunk shorter than a tag")
    nonce = int.from_bytes(base_nonce, "big")
    out = []
    for i, chunk in enumerate(chunks):
        out.append(aead.decrypt((nonce ^ i).to_bytes(12, "big"), chunk, None))
    return b"".join(out)


def raw_valid_full_chunks(aead_key: bytes, base_nonce: bytes, body: bytes) -> bytes:
    """The plaintext of the leading full chunks that decrypt at their position."""
    aead = AESGCM(aead_key)
    nonce = int.from_bytes(base_nonce, "big")
    out = []
    for i, chunk in enumerate(raw_chunks(body)):
        if len(chunk) != FULL_CT:
            break
        try:
            out.append(aead.decrypt((nonce ^ i).to_bytes(12, "big"), chunk, None))
        except InvalidTag:
            break
    return b"".join(out)


def reference_decrypt(key: bytes, context: bytes, ciphertext: bytes) -> bytes:
    aead_key, base_nonce, commitment = reference_derive(key, ciphertext[:24], context)
    assert ciphertext[24:56] == commitment
    return raw_decrypt(aead_key, base_nonce, ciphertext[56:])


# --- helpers ---------------------------------------------------------------------


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def stream_encrypt(key: bytes, context: bytes, plaintext: bytes, piece: int, **kw: Any) -> bytes:
    enc = CobblestoneEncryptor(key, context, **kw)
    out = [enc.header()]
    out.extend(enc.update(p) for p in pieces(plaintext, piece))
    out.append(enc.finalize())
    return b"".join(out)


def stream_decrypt(key: bytes, context: bytes, ciphertext: bytes, piece: int) -> bytes:
    dec = CobblestoneDecryptor(key, context)
    out = [dec.update(p) for p in pieces(ciphertext, piece)]
    out.append(dec.finalize())
    return b"".join(out)


def assert_keeps_failing(dec: CobblestoneDecryptor) -> None:
    for data in (b"", b"\x00" * 100):
        with pytest.raises(IntegrityError) as info:
            dec.update(data)
        assert str(info.value) == "verification failed"
    with pytest.raises(IntegrityError):
        dec.finalize()


def decode(vector: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    return (
        bytes.fromhex(vector["key"]),
        bytes.fromhex(vector["ctx"]),
        zlib.decompress(bytes.fromhex(vector["ct"])),
    )


# --- Wycheproof vectors, as shared/vectors/README.md says ---------------------------


def test_vector_file_is_the_published_one(cobblestone_file: dict[str, Any]) -> None:
    assert cobblestone_file["algorithm"] == "Cobblestone-256"
    tests = [t for g in cobblestone_file["testGroups"] for t in g["tests"]]
    assert len(tests) == cobblestone_file["numberOfTests"] == 35
    assert {(g["aead"], g["sha"]) for g in cobblestone_file["testGroups"]} == {
        ("AEAD_AES_256_GCM", "SHA-512")
    }


def test_vector_one_shot(cobblestone_vector: dict[str, Any]) -> None:
    key, ctx, ct = decode(cobblestone_vector)
    flags = cobblestone_vector["flags"]
    if "InvalidKeySize" in flags:
        # Rejected when the key is provided, before looking at any ciphertext.
        with pytest.raises(InvalidInput):
            CobblestoneDecryptor(key, ctx)
        with pytest.raises(InvalidInput):
            decrypt(key, ctx, ct)
        return
    if cobblestone_vector["result"] == "valid":
        plaintext = decrypt(key, ctx, ct)
        assert len(plaintext) == cobblestone_vector["msgLength"]
        assert hashlib.sha512(plaintext).hexdigest() == cobblestone_vector["msgSha512"]
    else:
        assert cobblestone_vector["result"] == "invalid"
        with pytest.raises(IntegrityError):
            decrypt(key, ctx, ct)


@pytest.mark.parametrize("piece", [1000, FULL_CT, 65536])
def test_vector_streaming(cobblestone_vector: dict[str, Any], piece: int) -> None:
    key, ctx, ct = decode(cobblestone_vector)
    flags = cobblestone_vector["flags"]
    if "InvalidKeySize" in flags:
        with pytest.raises(InvalidInput):
            CobblestoneDecryptor(key, ctx)
        return
    dec = CobblestoneDecryptor(key, ctx)
    released = bytearray()
    if cobblestone_vector["result"] == "valid":
        for p in pieces(ct, piece):
            released += dec.update(p)
        released += dec.finalize()
        assert len(released) == cobblestone_vector["msgLength"]
        assert hashlib.sha512(released).hexdigest() == cobblestone_vector["msgSha512"]
        return

    with pytest.raises(IntegrityError):
        for p in pieces(ct, piece):
            released += dec.update(p)
        dec.finalize()
    # "may produce up to that prefix ... must not produce any message bytes
    # beyond the prefix, must eventually return an error, and must keep
    # returning an error".
    limit = cobblestone_vector.get("msgLength", 0) if "PartialPlaintext" in flags else 0
    assert len(released) <= limit
    assert len(released) % CHUNK_SIZE == 0  # only whole, authenticated chunks
    if "aeadKey" in cobblestone_vector:
        prefix = raw_valid_full_chunks(
            bytes.fromhex(cobblestone_vector["aeadKey"]),
            bytes.fromhex(cobblestone_vector["baseNonce"]),
            ct[56:],
        )
        assert bytes(released) == prefix[: len(released)]
        if "PartialPlaintext" in flags:
            assert hashlib.sha512(prefix[:limit]).hexdigest() == cobblestone_vector["msgSha512"]
    assert_keeps_failing(dec)


def test_vector_header_failure(cobblestone_vector: dict[str, Any]) -> None:
    """HeaderFailure: rejected from the header alone, before any chunk is decrypted."""
    key, ctx, ct = decode(cobblestone_vector)
    if "HeaderFailure" not in cobblestone_vector["flags"]:
        # Every other vector has a good header: the failure, if any, is later.
        assert CobblestoneDecryptor(key, ctx).update(ct[:HEADER_SIZE]) == b""
        return
    if "InvalidKeySize" in cobblestone_vector["flags"]:
        with pytest.raises(InvalidInput):
            CobblestoneDecryptor(key, ctx)
        return
    dec = CobblestoneDecryptor(key, ctx)
    if len(ct) >= HEADER_SIZE:
        # Only the 56 header bytes are given: no chunk byte has been seen yet.
        with pytest.raises(IntegrityError):
            dec.update(ct[:HEADER_SIZE])
    else:
        assert dec.update(ct) == b""
        with pytest.raises(IntegrityError):
            dec.finalize()
    assert_keeps_failing(dec)


def test_vector_raw_chunk_layer(cobblestone_vector: dict[str, Any]) -> None:
    """aeadKey/baseNonce: our derivation matches, and the raw layer alone accepts/rejects."""
    if "aeadKey" not in cobblestone_vector:
        assert "HeaderFailure" in cobblestone_vector["flags"]
        return
    key, ctx, ct = decode(cobblestone_vector)
    aead_key = bytes.fromhex(cobblestone_vector["aeadKey"])
    base_nonce = bytes.fromhex(cobblestone_vector["baseNonce"])
    assert len(ct) >= 24
    derived = cobblestone._derive(key, ct[:24], ctx)
    assert derived[:2] == (aead_key, base_nonce)
    assert derived == reference_derive(key, ct[:24], ctx)
    if len(ct) >= HEADER_SIZE:
        assert derived[2] == ct[24:56]

    if cobblestone_vector["result"] == "valid":
        plaintext = raw_decrypt(aead_key, base_nonce, ct[56:])
        assert hashlib.sha512(plaintext).hexdigest() == cobblestone_vector["msgSha512"]
        # Raw mode is deterministic: re-encrypting with the vector's salt must
        # reproduce the published ciphertext byte for byte (Wycheproof doc,
        # "Encryption", way 2), whatever the input piece sizes.
        assert stream_encrypt(key, ctx, plaintext, 5000, salt=ct[:24]) == ct
        assert stream_encrypt(key, ctx, plaintext, CHUNK_SIZE, salt=ct[:24]) == ct
    else:
        with pytest.raises((InvalidTag, ValueError)):
            raw_decrypt(aead_key, base_nonce, ct[56:])


# --- round trips and streaming behaviour -------------------------------------------

FIVE_MIB = 5 * 1024 * 1024 + 123


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, FIVE_MIB]
)
@pytest.mark.parametrize("piece", [1, 7, 100_000])
def test_round_trip(size: int, piece: int) -> None:
    if size == FIVE_MIB and piece < 100_000:
        piece = 65_536  # 1-byte pieces of 5 MiB would take minutes; small sizes cover them
    plaintext = os.urandom(size)
    ct = stream_encrypt(KEY, CONTEXT, plaintext, piece)
    # The only correct chunking: n // 16384 full chunks then one short one.
    assert len(ct) == HEADER_SIZE + size + TAG_SIZE * (size // CHUNK_SIZE + 1)
    assert stream_decrypt(KEY, CONTEXT, ct, piece if piece > 1 else 3) == plaintext
    assert decrypt(KEY, CONTEXT, ct) == plaintext
    assert reference_decrypt(KEY, CONTEXT, ct) == plaintext


def test_one_shot_accepts_any_contiguous_buffer() -> None:
    plaintext = os.urandom(40_000)
    ct = encrypt(KEY, CONTEXT, bytearray(plaintext))
    assert decrypt(KEY, CONTEXT, memoryview(ct)) == plaintext
    assert decrypt(KEY, CONTEXT, bytearray(ct)) == plaintext


def test_salt_is_random() -> None:
    assert encrypt(KEY, CONTEXT, b"same")[:24] != encrypt(KEY, CONTEXT, b"same")[:24]


@pytest.mark.parametrize(
    ("key", "context"),
    [(bytes(32), CONTEXT), (KEY, CONTEXT[:-1] + b"\x00"), (KEY, b""), (KEY, CONTEXT + b"\x00")],
)
def test_wrong_key_or_context_fails_at_the_header(key: bytes, context: bytes) -> None:
    ct = encrypt(KEY, CONTEXT, os.urandom(50_000))
    dec = CobblestoneDecryptor(key, context)
    with pytest.raises(IntegrityError):
        dec.update(ct[:HEADER_SIZE])
    assert_keeps_failing(dec)
    with pytest.raises(IntegrityError):
        decrypt(key, context, ct)


def test_encryptor_holds_back_a_full_chunk_until_more_data() -> None:
    enc = CobblestoneEncryptor(KEY, CONTEXT)
    assert enc.update(bytes(CHUNK_SIZE)) == b""
    assert len(enc.update(b"\x01")) == FULL_CT
    assert len(enc.finalize()) == 1 + TAG_SIZE


def test_encryptor_finalize_after_exactly_full_chunk_adds_empty_chunk() -> None:
    enc = CobblestoneEncryptor(KEY, CONTEXT)
    assert enc.update(bytes(CHUNK_SIZE)) == b""
    tail = enc.finalize()
    assert len(tail) == FULL_CT + TAG_SIZE
    assert decrypt(KEY, CONTEXT, enc.header() + tail) == bytes(CHUNK_SIZE)


def test_decryptor_releases_a_full_chunk_only_when_more_follows() -> None:
    plaintext = os.urandom(2 * CHUNK_SIZE + 5)
    ct = encrypt(KEY, CONTEXT, plaintext)
    dec = CobblestoneDecryptor(KEY, CONTEXT)
    assert dec.update(ct[: HEADER_SIZE + FULL_CT]) == b""  # could still be a truncated stream
    assert (
        dec.update(ct[HEADER_SIZE + FULL_CT : HEADER_SIZE + FULL_CT + 1]) == plaintext[:CHUNK_SIZE]
    )
    assert dec.update(ct[HEADER_SIZE + FULL_CT + 1 :]) == plaintext[CHUNK_SIZE : 2 * CHUNK_SIZE]
    assert dec.finalize() == plaintext[2 * CHUNK_SIZE :]


def test_decryptor_memory_is_constant() -> None:
    """5 MiB in 64 KiB pieces: never more than one chunk of ciphertext held back."""
    plaintext = os.urandom(FIVE_MIB)
    ct = encrypt(KEY, CONTEXT, plaintext)
    dec = CobblestoneDecryptor(KEY, CONTEXT)
    out = []
    most = 0
    for p in pieces(ct, 65_536):
        out.append(dec.update(p))
        most = max(most, dec.buffered)
        assert len(out[-1]) <= 65_536 + CHUNK_SIZE
    out.append(dec.finalize())
    assert most <= FULL_CT
    assert b"".join(out) == plaintext


@pytest.mark.parametrize("size", [0, 100, CHUNK_SIZE, 2 * CHUNK_SIZE + 1])
def test_truncation_and_extension_fail(size: int) -> None:
    ct = encrypt(KEY, CONTEXT, os.urandom(size))
    bad = [
        ct[:-1],
        ct + b"\x00",
        ct + ct[HEADER_SIZE:],
        ct[:HEADER_SIZE],
        ct[: HEADER_SIZE - 1],
        b"",
    ]
    if size >= CHUNK_SIZE:
        bad.append(ct[: HEADER_SIZE + FULL_CT])  # ends on a full chunk: truncated
    for candidate in bad:
        with pytest.raises(IntegrityError):
            decrypt(KEY, CONTEXT, candidate)


def test_every_bit_position_is_authenticated() -> None:
    ct = bytearray(encrypt(KEY, CONTEXT, os.urandom(CHUNK_SIZE + 10)))
    for index in (0, 23, 24, 55, 56, 56 + FULL_CT - 1, 56 + FULL_CT, len(ct) - 1):
        ct[index] ^= 0x01
        with pytest.raises(IntegrityError):
            decrypt(KEY, CONTEXT, ct)
        ct[index] ^= 0x01
    assert decrypt(KEY, CONTEXT, ct)


def test_decryptor_failure_mid_stream_keeps_failing() -> None:
    plaintext = os.urandom(3 * CHUNK_SIZE + 1)
    ct = bytearray(encrypt(KEY, CONTEXT, plaintext))
    ct[HEADER_SIZE + FULL_CT + 3] ^= 0x80  # second chunk
    dec = CobblestoneDecryptor(KEY, CONTEXT)
    released = dec.update(ct[: HEADER_SIZE + FULL_CT + 1])
    assert released == plaintext[:CHUNK_SIZE]
    with pytest.raises(IntegrityError):
        dec.update(ct[HEADER_SIZE + FULL_CT + 1 :])
    assert_keeps_failing(dec)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_wrong_key_size_rejected_before_anything(size: int) -> None:
    with pytest.raises(InvalidInput):
        CobblestoneEncryptor(bytes(size), CONTEXT)
    with pytest.raises(InvalidInput):
        CobblestoneDecryptor(bytes(size), CONTEXT)
    with pytest.raises(InvalidInput):
        encrypt(bytes(size), CONTEXT, b"x")


def test_misuse_is_refused() -> None:
    with pytest.raises(InvalidInput):
        CobblestoneEncryptor(KEY, CONTEXT, salt=bytes(23))
    enc = CobblestoneEncryptor(KEY, CONTEXT)
    enc.finalize()
    with pytest.raises(InvalidInput):
        enc.update(b"x")
    with pytest.raises(InvalidInput):
        enc.finalize()
    dec = CobblestoneDecryptor(KEY, CONTEXT)
    dec.update(enc.header() + CobblestoneEncryptor(KEY, CONTEXT, salt=enc.header()[:24]).finalize())
    assert dec.finalize() == b""
    with pytest.raises(InvalidInput):
        dec.update(b"")


def test_header_is_salt_then_commitment() -> None:
    salt = os.urandom(24)
    enc = CobblestoneEncryptor(KEY, CONTEXT, salt=salt)
    assert enc.header() == salt + reference_derive(KEY, salt, CONTEXT)[2]
    assert len(enc.header()) == HEADER_SIZE == 56
