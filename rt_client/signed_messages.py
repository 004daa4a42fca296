"""Signed protobuf messages: ``SignedEnvelope`` in, verified message out.

The one way this project signs and opens requests, decisions, receipts,
notices and thread messages (DESIGN.md section 5). :func:`open_message`
verifies the signature *before* it parses the body, and answers every failure
with the same detail-free ``IntegrityError``.

After a signing-key rotation the signer's directory entry lists its previous
keys (``PreviousSigningKey``): :func:`open_message_by` (and
:func:`verify_by_keys` for other signed things) accepts a signature by one of
them only on an item whose own timestamp (``created_at``, ``decided_at``,
``received_at``, ``sent_at``, ``imported_at`` or ``at``) is no later than the
key's ``not_after`` (give or take ``SIGNED_AT_SKEW``), and only until the
key's ``expires_at``. So a request queued before the rotation and delivered
after it still verifies; a signature by a retired key on an item dated after
its retirement does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message

from protos.rt.v1 import common_pb2
from rt_client.crypto import envelope
from rt_client.errors import IntegrityError

M = TypeVar("M", bound=Message)
T = TypeVar("T")

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


# How far an item's own date may run past a previous key's not_after (the clocks' skew).
SIGNED_AT_SKEW: Final = timedelta(minutes=2)
_SIGNED_AT_FIELDS: Final = (
    "created_at",
    "decided_at",
    "received_at",
    "sent_at",
    "imported_at",
    "at",
)


@dataclass(frozen=True)
class PreviousSigningKey:
    """A signing key the district rotated away from (``rt.v1.PreviousSigningKey``)."""

    public_key: bytes
    not_after: datetime  # retired then: items dated later are refused
    expires_at: datetime  # not accepted at all from then on


def signed_at(message: Message) -> datetime | None:
    """The item's own date (the first timestamp field it has of the known ones), or None."""
    fields = message.DESCRIPTOR.fields_by_name
    for name in _SIGNED_AT_FIELDS:
        if name in fields and message.HasField(name):
            stamp = getattr(message, name)
            return datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, UTC)
    return None


def verify_by_keys(
    attempt: Callable[[bytes], T],
    current: bytes,
    previous: Sequence[PreviousSigningKey],
    now: datetime,
    dated: Callable[[T], datetime | None],
) -> tuple[T, bytes]:
    """``attempt(key)`` with the current key, else with a previous key the item may use.

    ``attempt`` verifies (then parses) with one key and raises ``IntegrityError``
    if the signature does not verify; ``dated`` reads the parsed item's date.
    Returns the result and the key that verified. Raises ``IntegrityError``.
    """
    try:
        return attempt(current), current
    except IntegrityError as refused:
        for key in previous:
            if now >= key.expires_at:
                continue
            try:
                result = attempt(key.public_key)
            except IntegrityError:
                continue
            when = dated(result)
            if when is not None and when <= key.not_after + SIGNED_AT_SKEW:
                return result, key.public_key
            raise IntegrityError() from refused  # a retired key on a later item
        raise


def open_message_by(
    label: bytes,
    signed: common_pb2.SignedEnvelope,
    *,
    signer: str,
    public_key: bytes,
    previous: Sequence[PreviousSigningKey],
    now: datetime,
    message_type: type[M],
) -> M:
    """``open_message`` by the signer's current key or, for items dated before they
    were retired, its previous ones. Raises ``IntegrityError``."""

    def attempt(key: bytes) -> M:
        return open_message(label, signed, signer=signer, public_key=key, message_type=message_type)

    return verify_by_keys(attempt, public_key, previous, now, signed_at)[0]
