"""Signed envelopes: Ed25519 signatures with one domain-separation label per message type.

Every request, decision, receipt and thread message travels as
``SignedEnvelope { bytes body; string signer_district; bytes signature; }``
(DESIGN.md section 5). The signature covers ``label || 0x00 || body``: the label
says which message type the body is, so a signature made for one type never
verifies as another. This module is protobuf-free; callers move ``Signed``
to and from the protobuf message, and verify before parsing ``body``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from rt_client.errors import IntegrityError, InvalidInput

__all__ = [
    "KNOWN_LABELS",
    "LABEL_ACK",
    "LABEL_DECISION",
    "LABEL_DELIVERY_RECEIPT",
    "LABEL_DIRECTORY_ENTRY",
    "LABEL_ENROLL",
    "LABEL_IMPORT_NOTICE",
    "LABEL_MESSAGE",
    "LABEL_REQUEST",
    "LABEL_REQUEST_RECEIPT",
    "LABEL_TRANSFER_HEADER",
    "LABEL_TRANSFER_START",
    "SIGNATURE_SIZE",
    "Signed",
    "ed25519_public_bytes",
    "load_ed25519_private",
    "load_ed25519_public",
    "open_signed",
    "seal",
    "sign_body",
    "verify_body",
]

LABEL_REQUEST: Final = b"rt/v1 records-request"
LABEL_REQUEST_RECEIPT: Final = b"rt/v1 request-receipt"
LABEL_DECISION: Final = b"rt/v1 decision"
LABEL_DELIVERY_RECEIPT: Final = b"rt/v1 delivery-receipt"
LABEL_MESSAGE: Final = b"rt/v1 thread-message"
LABEL_IMPORT_NOTICE: Final = b"rt/v1 import-notice"
# Deliberately not "rt/v1 transfer...": no envelope's signed bytes may start
# with the transfer trailer's prefix (see ``rt_client.crypto.trailer``).
LABEL_TRANSFER_HEADER: Final = b"rt/v1 record-stream-header"
# Format version 2: the first frame's signature covers the header and SHA-256(wrapped key).
LABEL_TRANSFER_START: Final = b"rt/v1 record-stream-start"
LABEL_DIRECTORY_ENTRY: Final = b"rt/v1 directory-entry"
LABEL_ENROLL: Final = b"rt/v1 enroll"
LABEL_ACK: Final = b"rt/v1 ack"

KNOWN_LABELS: Final = frozenset(
    {
        LABEL_REQUEST,
        LABEL_REQUEST_RECEIPT,
        LABEL_DECISION,
        LABEL_DELIVERY_RECEIPT,
        LABEL_MESSAGE,
        LABEL_IMPORT_NOTICE,
        LABEL_TRANSFER_HEADER,
        LABEL_TRANSFER_START,
        LABEL_DIRECTORY_ENTRY,
        LABEL_ENROLL,
        LABEL_ACK,
    }
)

SIGNATURE_SIZE: Final = 64  # RFC 8032 section 5.1.6
_PUBLIC_KEY_SIZE = 32  # RFC 8032 section 5.1.5


@dataclass(frozen=True)
class Signed:
    """A body with its signature, as carried by the protobuf ``SignedEnvelope``.

    ``signer`` (the district code) is *not* covered by the signature: it only
    says whose key to verify with. Districts named inside ``body`` must still
    be checked against the signer and the TLS peer.
    """

    body: bytes
    signer: str
    signature: bytes


def _signed_bytes(label: bytes, body: bytes) -> bytes:
    if label not in KNOWN_LABELS:
        raise InvalidInput("unknown signature label")
    # label || 0x00 || body. Labels contain no zero byte, so the zero ends the
    # label unambiguously: one label can never pose as a prefix of another
    # label followed by part of a body.
    return label + b"\x00" + bytes(body)


def sign_body(label: bytes, body: bytes, key: Ed25519PrivateKey) -> bytes:
    """The 64-byte Ed25519 signature of ``body`` as a message of type ``label``.

    Raises ``InvalidInput`` for a label not in ``KNOWN_LABELS``.
    """
    return key.sign(_signed_bytes(label, body))


def verify_body(
    label: bytes,
    body: bytes,
    signature: bytes,
    public_key: bytes | Ed25519PublicKey,
) -> None:
    """Check ``signature`` over ``body`` as a message of type ``label``.

    Raises ``IntegrityError`` if it does not verify, or if the signature or raw
    public key has the wrong size; ``InvalidInput`` for an unknown label.
    """
    _verify_raw(public_key, _signed_bytes(label, body), signature)


def _verify_raw(public_key: bytes | Ed25519PublicKey, message: bytes, signature: bytes) -> None:
    """Plain Ed25519 verification (RFC 8032), every failure as ``IntegrityError``.

    Internal: exposed for the Wycheproof vector tests, which sign raw messages.
    """
    if len(signature) != SIGNATURE_SIZE:
        raise IntegrityError()
    try:
        key = (
            public_key
            if isinstance(public_key, Ed25519PublicKey)
            else load_ed25519_public(public_key)
        )
        key.verify(bytes(signature), message)
    except (InvalidSignature, InvalidInput) as exc:
        raise IntegrityError() from exc


def seal(label: bytes, body: bytes, signer: str, key: Ed25519PrivateKey) -> Signed:
    """Sign ``body`` as ``signer``. Raises ``InvalidInput`` for an unknown label."""
    return Signed(body=bytes(body), signer=signer, signature=sign_body(label, body, key))


def open_signed(label: bytes, signed: Signed, public_key: bytes | Ed25519PublicKey) -> bytes:
    """Verify ``signed`` as a message of type ``label``, then return its body.

    ``public_key`` must be the key the directory lists for ``signed.signer``.
    Raises ``IntegrityError`` if the signature does not verify.
    """
    verify_body(label, signed.body, signed.signature, public_key)
    return signed.body


def ed25519_public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key (as published in directory entries)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes_raw()


def load_ed25519_private(raw: bytes) -> Ed25519PrivateKey:
    """Load a raw 32-byte Ed25519 private key. Raises ``InvalidInput`` if malformed."""
    if len(raw) != 32:
        raise InvalidInput("Ed25519 private key must be 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(bytes(raw))


def load_ed25519_public(raw: bytes) -> Ed25519PublicKey:
    """Load a raw 32-byte Ed25519 public key. Raises ``InvalidInput`` if malformed."""
    if len(raw) != _PUBLIC_KEY_SIZE:
        raise InvalidInput("Ed25519 public key must be 32 bytes")
    try:
        return Ed25519PublicKey.from_public_bytes(bytes(raw))
    except ValueError as exc:
        raise InvalidInput("Ed25519 public key is malformed") from exc
