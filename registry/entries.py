"""The registry's signed directory entries: sign, store and log a new version, re-sign at half-life.

Entries are signed with the registry's Ed25519 key; every change is a new
version. An entry is re-signed (new version, new validity) when it is read
with less than half of its validity left, so an active district's entry never
expires. A re-signed entry drops the previous signing keys whose time is up
(``retire_signing_key`` adds one when a district rotates its signing key).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos.rt.v1 import common_pb2
from registry.store import STATUS_ACTIVE, STATUS_REVOKED, EntryRow, StoreTransaction
from registry.tlog import append_entry
from rt_client.crypto.envelope import LABEL_DIRECTORY_ENTRY, sign_body
from rt_client.directory import REGISTRY_SIGNER, Clock, DirectoryEntry
from rt_client.ids import DistrictCode
from rt_client.signed_messages import PreviousSigningKey

__all__ = ["MAX_PREVIOUS_SIGNING_KEYS", "EntrySigner", "parse_stored", "retire_signing_key"]

# An entry lists at most this many retired signing keys (the newest).
MAX_PREVIOUS_SIGNING_KEYS = 4


def retire_signing_key(
    entry: DirectoryEntry, new_key: bytes | None, now: datetime, keep_for: timedelta
) -> tuple[PreviousSigningKey, ...]:
    """The previous signing keys of ``entry`` once its key is replaced by ``new_key``.

    The key being replaced is listed first, retired ``now`` and kept for
    ``keep_for``; keys whose time is up are dropped. Without a new key, only that.
    """
    kept = tuple(k for k in entry.previous_signing_keys if k.expires_at > now)
    if new_key is None or new_key == entry.signing_public_key:
        return kept
    retired = PreviousSigningKey(entry.signing_public_key, not_after=now, expires_at=now + keep_for)
    return (retired, *kept)[:MAX_PREVIOUS_SIGNING_KEYS]


class EntrySigner:
    """Signs directory entries with the registry's key and stores each as a new version."""

    def __init__(self, signing_key: Ed25519PrivateKey, validity: timedelta, clock: Clock) -> None:
        self._signing_key = signing_key
        self._validity = validity
        self._clock = clock

    @property
    def public_key(self) -> bytes:
        return self._signing_key.public_key().public_bytes_raw()

    def expiry(self, issued_at: datetime) -> datetime:
        """When an entry issued at ``issued_at`` expires."""
        return issued_at + self._validity

    def current(
        self, tx: StoreTransaction, district: DistrictCode
    ) -> common_pb2.SignedEnvelope | None:
        """The district's current signed entry, re-signed first if past half its validity."""
        current = tx.current_entry(district)
        if current is None:
            return None
        now = self._clock()
        if current.expires_at - now < self._validity / 2:
            entry = replace(
                parse_stored(current),
                version=current.version + 1,
                issued_at=now,
                expires_at=self.expiry(now),
            )
            entry = replace(
                entry, previous_signing_keys=retire_signing_key(entry, None, now, timedelta(0))
            )
            return self.store(tx, entry)
        return common_pb2.SignedEnvelope(
            body=current.body, signer_district=REGISTRY_SIGNER, signature=current.signature
        )

    def store(self, tx: StoreTransaction, entry: DirectoryEntry) -> common_pb2.SignedEnvelope:
        """Sign ``entry`` and store it as the district's newest version."""
        body = entry.to_proto().SerializeToString(deterministic=True)
        signature = sign_body(LABEL_DIRECTORY_ENTRY, body, self._signing_key)
        tx.add_entry(
            EntryRow(
                district_code=entry.district_code,
                version=entry.version,
                body=body,
                signature=signature,
                status=STATUS_ACTIVE if entry.is_active else STATUS_REVOKED,
                tls_spki_sha256=entry.tls_spki_sha256,
                issued_at=entry.issued_at,
                expires_at=entry.expires_at,
            )
        )
        # Logged in the same transaction: no entry is ever served that is not logged.
        append_entry(tx, entry.district_code, entry.version, body)
        return common_pb2.SignedEnvelope(
            body=body, signer_district=REGISTRY_SIGNER, signature=signature
        )


def parse_stored(row: EntryRow) -> DirectoryEntry:
    """An entry from our own database (signed by us; parsed, not re-verified)."""
    msg = common_pb2.DirectoryEntry()
    msg.ParseFromString(row.body)
    return DirectoryEntry.from_proto(msg)
