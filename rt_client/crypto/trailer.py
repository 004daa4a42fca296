"""The transfer trailer: the sender's signature binding header, wrapped key and ciphertext.

DESIGN.md section 5, step 4: the last frame of ``DeliverRecords`` carries the
sender's Ed25519 signature over::

    "rt/v1 transfer" || H || SHA-256(wrapped key) || SHA-512(ciphertext)

where ``H = SHA-256(serialized TransferHeader)`` and the ciphertext is the whole
Cobblestone ciphertext (salt, commitment and every chunk) exactly as sent.
Neither side holds the ciphertext in memory: both hash it incrementally as the
frames pass, e.g.::

    digest = hashlib.sha512()
    for frame in frames:
        digest.update(frame)
    verify_trailer(h, wrapped_key, digest.digest(), signature, sender_key)

No envelope label starts with ``"rt/v1 transfer"``, so a trailer signature can
never be replayed as a signed envelope, nor the reverse.
"""

from __future__ import annotations

import hashlib
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from rt_client.crypto.envelope import _verify_raw
from rt_client.errors import InvalidInput

__all__ = [
    "TRAILER_LABEL",
    "header_digest",
    "sign_trailer",
    "trailer_message",
    "verify_trailer",
]

TRAILER_LABEL: Final = b"rt/v1 transfer"

_SHA256_SIZE = 32
_SHA512_SIZE = 64


def header_digest(serialized_header: bytes) -> bytes:
    """``H``: the SHA-256 of the serialized ``TransferHeader``, exactly as signed and sent."""
    return hashlib.sha256(serialized_header).digest()


def trailer_message(header_digest: bytes, wrapped_key: bytes, ciphertext_sha512: bytes) -> bytes:
    """The bytes the trailer signature covers (fixed length: 14 + 32 + 32 + 64).

    ``ciphertext_sha512`` is the SHA-512 digest of the complete Cobblestone
    ciphertext, computed incrementally by the caller. Raises ``InvalidInput``
    if a digest has the wrong size.
    """
    if len(header_digest) != _SHA256_SIZE:
        raise InvalidInput("header digest must be a 32-byte SHA-256")
    if len(ciphertext_sha512) != _SHA512_SIZE:
        raise InvalidInput("ciphertext digest must be a 64-byte SHA-512")
    return b"".join(
        (
            TRAILER_LABEL,
            bytes(header_digest),
            hashlib.sha256(wrapped_key).digest(),
            bytes(ciphertext_sha512),
        )
    )


def sign_trailer(
    header_digest: bytes,
    wrapped_key: bytes,
    ciphertext_sha512: bytes,
    key: Ed25519PrivateKey,
) -> bytes:
    """The sender's 64-byte trailer signature. Raises ``InvalidInput`` for bad digest sizes."""
    return key.sign(trailer_message(header_digest, wrapped_key, ciphertext_sha512))


def verify_trailer(
    header_digest: bytes,
    wrapped_key: bytes,
    ciphertext_sha512: bytes,
    signature: bytes,
    public_key: bytes | Ed25519PublicKey,
) -> None:
    """Check the sender's trailer signature.

    Raises ``IntegrityError`` if it does not verify (or the signature or key
    has the wrong size); ``InvalidInput`` for digests of the wrong size.
    """
    _verify_raw(
        public_key, trailer_message(header_digest, wrapped_key, ciphertext_sha512), signature
    )
