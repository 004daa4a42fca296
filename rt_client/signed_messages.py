"""Signed protobuf messages: ``SignedEnvelope`` in, verified message out.

The one way this project signs and opens requests, decisions, receipts,
notices and thread messages (DESIGN.md section 5). :func:`open_message`
verifies the signature *before* it parses the body, and answers every failure
with the same detail-free ``IntegrityError``.
"""

from __future__ import annotations

from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message

from protos.rt.v1 import common_pb2
from rt_client.crypto import envelope
from rt_client.errors import IntegrityError

M = TypeVar("M", bound=Message)

# A request, decision or message is small; anything larger is refused unparsed.
MAX_BODY_BYTES = 64 * 1024


def sign_message(
    label: bytes, message: Message, signer: str, key: Ed25519PrivateKey
) -> common_pb2.SignedEnvelope:
    body = message.SerializeToString(deterministic=True)
    return common_pb2.SignedEnvelope(
        body=body, signer_district=signer, signature=envelope.sign_body(label, body, key)
    )


def open_message(
    label: bytes,
    signed: common_pb2.SignedEnvelope,
    *,
    signer: str,
    public_key: bytes,
    message_type: type[M],
) -> M:
    """Verify ``signed`` as ``signer``'s, then parse it as ``message_type``.

    Raises IntegrityError when the signer is not the expected one, the body is
    oversized, the signature does not verify, or the body does not parse.
    """
    if signed.signer_district != signer or len(signed.body) > MAX_BODY_BYTES:
        raise IntegrityError()
    envelope.verify_body(label, signed.body, signed.signature, public_key)
    message = message_type()
    try:
        message.ParseFromString(signed.body)
    except Exception as exc:  # DecodeError, bad UTF-8 ...: one answer for all
        raise IntegrityError() from exc
    return message
