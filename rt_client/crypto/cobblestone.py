"""Cobblestone-256: streaming, key-committing chunked encryption of the record stream.

Implements c2sp.org/chunked-encryption instantiated with AES-256-GCM and
HKDF-Expand(SHA-512) (the "Cobblestone-256" instantiation of the Wycheproof
vectors), used for the transfer payload in DESIGN.md section 5 with
``context = H`` (the SHA-256 of the serialized ``TransferHeader``).

Ciphertext layout::

    salt (24) || commitment (32) || chunk_0 || chunk_1 || ... || chunk_n

Every chunk but the last carries exactly ``CHUNK_SIZE`` plaintext bytes; the
last one is always shorter, possibly empty. That short final chunk is the
end-of-message signal: there is no "last chunk" flag in the nonce or the AAD.
Both directions stream in constant memory: at most one chunk is held back.

Every decryption failure, whatever its cause, raises the same detail-free
``IntegrityError``; a decryptor that failed once keeps failing.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from rt_client.errors import IntegrityError, InvalidInput

__all__ = [
    "CHUNK_SIZE",
    "HEADER_SIZE",
    "KEY_SIZE",
    "SALT_SIZE",
    "TAG_SIZE",
    "CobblestoneDecryptor",
    "CobblestoneEncryptor",
    "decrypt",
    "encrypt",
]

KEY_SIZE = 32
"""Input key size: the AEAD key size (AES-256)."""
NONCE_SIZE = 12
SALT_SIZE = 24
COMMITMENT_SIZE = 32
HEADER_SIZE = SALT_SIZE + COMMITMENT_SIZE
TAG_SIZE = 16
CHUNK_SIZE = 16384
"""Plaintext bytes in every chunk except the final, shorter one."""
_FULL_CHUNK_CT = CHUNK_SIZE + TAG_SIZE

# "The message MUST NOT exceed 2^38 chunks ... implementations MUST abort."
_MAX_CHUNKS = 1 << 38

# "key || base nonce || commitment = HKDF-Expand(prk = input key,
#   info = "c2sp.org/chunked-encryption@v1+" || aead || 0x00 || salt || context)"
# with aead the IANA AEAD registry name.
_INFO_PREFIX = b"c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM\x00"


def _derive(input_key: bytes, salt: bytes, context: bytes) -> tuple[bytes, bytes, bytes]:
    """``(key, base nonce, commitment)`` for one message (spec, "Key derivation")."""
    # HKDF-Expand only, no Extract: the input key is uniformly random
    # (spec, "Rationale"; this also keeps it an SP 800-108 KDF).
    okm = HKDFExpand(
        algorithm=hashes.SHA512(),
        length=KEY_SIZE + NONCE_SIZE + COMMITMENT_SIZE,
        info=_INFO_PREFIX + salt + context,
    ).derive(input_key)
    return okm[:KEY_SIZE], okm[KEY_SIZE : KEY_SIZE + NONCE_SIZE], okm[KEY_SIZE + NONCE_SIZE :]


class _Keys:
    """The per-message AEAD, base nonce and commitment derived from key, salt, context."""

    __slots__ = ("aead", "base_nonce", "commitment")

    def __init__(self, input_key: bytes, salt: bytes, context: bytes) -> None:
        key, base_nonce, self.commitment = _derive(input_key, salt, context)
        self.aead = AESGCM(key)
        self.base_nonce = int.from_bytes(base_nonce, "big")

    def nonce(self, counter: int) -> bytes:
        # Base nonce XOR the chunk number as a big-endian integer as wide as
        # the nonce (spec, "AEAD usage").
        return (self.base_nonce ^ counter).to_bytes(NONCE_SIZE, "big")


class _HoldBack:
    """Cuts a byte stream into fixed-size pieces, keeping the last one back.

    A piece is handed to ``process`` only once at least one more byte has
    arrived, because only then is it known not to be the message's final
    piece. Input is processed in place through memoryviews; at most ``size``
    bytes are ever copied into the pending buffer.
    """

    __slots__ = ("_pending", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._pending = bytearray()

    def __len__(self) -> int:
        return len(self._pending)

    def feed(
        self, data: bytes | bytearray | memoryview, process: Callable[[memoryview], bytes]
    ) -> bytes:
        size = self._size
        pending = self._pending
        out: list[bytes] = []
        view = _byte_view(data)
        while len(pending) + len(view) > size:
            if pending:
                take = size - len(pending)
                pending += view[:take]
                view = view[take:]
                # Released before ``clear()``: a live export would block resizing.
                with memoryview(pending) as piece:
                    out.append(process(piece))
                pending.clear()
            else:
                out.append(process(view[:size]))
                view = view[size:]
        pending += view
        return b"".join(out)

    def take_rest(self) -> bytes:
        rest = bytes(self._pending)
        self.clear()
        return rest

    def clear(self) -> None:
        self._pending.clear()


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    """A flat byte view of any contiguous buffer, without copying it."""
    return memoryview(data).cast("B")


def _check_key(key: bytes) -> None:
    # Rejected when the key is provided, before any other work (Wycheproof
    # InvalidKeySize). A wrong-size key is a caller bug, not a forged message:
    # keys reaching here come from ``unwrap_key``, which guarantees 32 bytes.
    if len(key) != KEY_SIZE:
        raise InvalidInput(f"Cobblestone-256 input key must be {KEY_SIZE} bytes")


class CobblestoneEncryptor:
    """Streaming encryptor: ``header() + update(...) + ... + finalize()`` is the ciphertext.

    Raises ``InvalidInput`` for a key or salt of the wrong size, and when used
    after ``finalize()``.
    """

    def __init__(self, key: bytes, context: bytes, *, salt: bytes | None = None) -> None:
        """Start a message under ``key`` bound to ``context``.

        ``salt`` is for reproducing published vectors only: it must never repeat
        for a key (spec, "Key derivation"); leave it ``None`` to draw 24 random bytes.
        """
        _check_key(key)
        if salt is None:
            salt = os.urandom(SALT_SIZE)
        elif len(salt) != SALT_SIZE:
            raise InvalidInput(f"Cobblestone salt must be {SALT_SIZE} bytes")
        self._keys = _Keys(bytes(key), bytes(salt), bytes(context))
        self._header = bytes(salt) + self._keys.commitment
        self._buffer = _HoldBack(CHUNK_SIZE)
        self._counter = 0
        self._finalized = False

    def header(self) -> bytes:
        """The 56-byte ``salt || commitment`` that precedes the chunks."""
        return self._header

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Take more plaintext; return the ciphertext of the chunks now complete.

        A full chunk is emitted only once more data follows it, since the final
        chunk must be shorter than ``CHUNK_SIZE``.
        """
        self._check_open()
        return self._buffer.feed(data, self._seal)

    def finalize(self) -> bytes:
        """Return the last chunks: the held-back one if full, then the short final chunk.

        The final chunk is a bare 16-byte tag when no plaintext is left over.
        """
        self._check_open()
        self._finalized = True
        rest = self._buffer.take_rest()
        if len(rest) < CHUNK_SIZE:
            return self._seal(memoryview(rest))
        # The held-back chunk is full, so it cannot be the final one: "A
        # message of 16 KiB is encrypted as two chunks, one of 16 KiB and one
        # empty" (spec, "Message chunking").
        return self._seal(memoryview(rest)) + self._seal(memoryview(b""))

    def _seal(self, chunk: memoryview) -> bytes:
        if self._counter >= _MAX_CHUNKS:
            raise InvalidInput("message too long for Cobblestone (2^38 chunks)")
        ciphertext = self._keys.aead.encrypt(self._keys.nonce(self._counter), chunk, None)
        self._counter += 1
        return ciphertext

    def _check_open(self) -> None:
        if self._finalized:
            raise InvalidInput("encryptor already finalized")


class CobblestoneDecryptor:
    """Streaming decryptor: ``update()`` releases authenticated plaintext, ``finalize()`` the rest.

    Plaintext is released only chunk by chunk, after its tag verified; a full
    chunk is released only once more ciphertext follows it. The plaintext is
    complete and authentic only when ``finalize()`` returns: until then the
    caller must treat everything released as provisional (a truncated stream
    yields a valid prefix, then an error).

    Any failure raises ``IntegrityError`` and poisons the decryptor: every later
    call raises ``IntegrityError`` again. Raises ``InvalidInput`` for a key of
    the wrong size, and when used after a successful ``finalize()``.
    """

    def __init__(self, key: bytes, context: bytes) -> None:
        _check_key(key)
        self._input_key = bytes(key)
        self._context = bytes(context)
        self._header = bytearray()
        self._keys: _Keys | None = None
        self._buffer = _HoldBack(_FULL_CHUNK_CT)
        self._counter = 0
        self._failed = False
        self._finalized = False

    @property
    def buffered(self) -> int:
        """Ciphertext bytes held back, not yet decrypted (at most one chunk)."""
        return len(self._header) + len(self._buffer)

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Take more ciphertext; return the plaintext of the chunks now authenticated.

        Raises ``IntegrityError`` as soon as the commitment or a chunk fails.
        """
        self._check_usable()
        try:
            view = _byte_view(data)
            if self._keys is None:
                view = self._read_header(view)
                if self._keys is None:
                    return b""
            # Chunks leave the hold-back buffer only when more ciphertext
            # follows them, so each one handed to ``_open`` must be a full,
            # non-final chunk.
            return self._buffer.feed(view, self._open)
        except Exception:
            self._fail()
            raise

    def finalize(self) -> bytes:
        """End of ciphertext: authenticate and return the final short chunk's plaintext.

        Raises ``IntegrityError`` if the message is truncated (including a
        stream ending on a full chunk) or has trailing data.
        """
        self._check_usable()
        try:
            if self._keys is None:
                raise IntegrityError()  # shorter than the 56-byte header
            final = self._buffer.take_rest()
            # "the final chunk ... must have encrypted length between len(tag)
            # and 16 KiB + len(tag) - 1. Otherwise ... truncation error."
            if not TAG_SIZE <= len(final) < _FULL_CHUNK_CT:
                raise IntegrityError()
            plaintext = self._open(memoryview(final))
        except Exception:
            self._fail()
            raise
        self._finalized = True
        self._input_key = b""
        self._keys = None
        return plaintext

    def _read_header(self, view: memoryview) -> memoryview:
        take = HEADER_SIZE - len(self._header)
        self._header += view[:take]
        if len(self._header) < HEADER_SIZE:
            return view[len(view) :]
        salt = bytes(self._header[:SALT_SIZE])
        keys = _Keys(self._input_key, salt, self._context)
        # "implementations MUST check the commitment matches the derived value
        # before continuing" -- in constant time, and before any chunk.
        if not hmac.compare_digest(keys.commitment, bytes(self._header[SALT_SIZE:])):
            raise IntegrityError()
        self._keys = keys
        self._header.clear()
        return view[take:]

    def _open(self, chunk: memoryview) -> bytes:
        keys = self._keys
        if keys is None or self._counter >= _MAX_CHUNKS:
            raise IntegrityError()
        try:
            plaintext = keys.aead.decrypt(keys.nonce(self._counter), chunk, None)
        except InvalidTag as exc:
            raise IntegrityError() from exc
        self._counter += 1
        return plaintext

    def _fail(self) -> None:
        self._failed = True
        self._keys = None
        self._input_key = b""
        self._header.clear()
        self._buffer.clear()

    def _check_usable(self) -> None:
        if self._failed:
            raise IntegrityError()
        if self._finalized:
            raise InvalidInput("decryptor already finalized")


def encrypt(key: bytes, context: bytes, plaintext: bytes | bytearray | memoryview) -> bytes:
    """Encrypt a whole message in one call. Raises ``InvalidInput`` for a bad key size."""
    encryptor = CobblestoneEncryptor(key, context)
    return b"".join((encryptor.header(), encryptor.update(plaintext), encryptor.finalize()))


def decrypt(key: bytes, context: bytes, ciphertext: bytes | bytearray | memoryview) -> bytes:
    """Decrypt and authenticate a whole message; all or nothing.

    Raises ``IntegrityError`` for any bad ciphertext, wrong key or wrong
    context; ``InvalidInput`` for a key of the wrong size.
    """
    decryptor = CobblestoneDecryptor(key, context)
    body = decryptor.update(ciphertext)
    return body + decryptor.finalize()
