"""Seal and open an encrypted record transfer (DESIGN.md section 5).

Sender: :func:`seal_transfer` builds the student's batches once, staging them
(encrypted under a throwaway key) until their size is known -- the header
declares plaintext and ciphertext length, so the receiver can bound what it
accepts before it stores a byte -- then encrypts them for the receiver into a
spool (anything with ``write``: a file, or the district server's database
spool), so memory stays constant however large the transfer is.

Receiver: :func:`open_header` verifies the header's signature before parsing
it, :func:`verify_trailer` checks the sender's signature over header, wrapped
key and ciphertext, and :func:`decrypt_batches` streams the plaintext back as
``RecordBatch`` messages. Every failure is an ``IntegrityError`` (or an
``InvalidInput`` for a well-signed but unacceptable header) with no detail.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos.rt.v1 import common_pb2, records_pb2
from rt_client.crypto import cobblestone, envelope, hpke, trailer
from rt_client.errors import IntegrityError, InvalidInput
from rt_client.framing import BatchReader, delimit

# Version 2 (sent): the first frame's signature covers header || SHA-256(wrapped key),
# so every chunk that decrypts is the sender's and the receiver can work as they
# arrive. Version 1 (the header's signature alone) is still accepted, for
# transfers sealed before the upgrade and still in flight.
FORMAT_VERSION = 2
FORMAT_VERSION_V1 = 1
ACCEPTED_FORMAT_VERSIONS = frozenset({FORMAT_VERSION_V1, FORMAT_VERSION})
PAYLOAD_SUITE = "Cobblestone-256"
# Bounds a receiver applies to a header before it accepts any ciphertext.
MAX_TRANSFER_BYTES = 8 * 1024 * 1024 * 1024
MAX_TABLE_ROWS = 50_000_000


class CiphertextSink(Protocol):
    """Where the ciphertext goes, in order, piece by piece (a binary file will do)."""

    def write(self, data: bytes, /) -> object: ...


class ReceiverKeys(Protocol):
    """What the sender needs of the receiver's directory entry."""

    @property
    def district_code(self) -> str: ...
    @property
    def hpke_kem(self) -> str: ...
    @property
    def hpke_kdf(self) -> str: ...
    @property
    def hpke_aead(self) -> str: ...
    @property
    def hpke_public_key(self) -> bytes: ...
    @property
    def hpke_key_id(self) -> str: ...


def ciphertext_length(plaintext_bytes: int) -> int:
    """Cobblestone length: header + plaintext + one tag per chunk (last chunk short)."""
    chunks = plaintext_bytes // cobblestone.CHUNK_SIZE + 1
    return cobblestone.HEADER_SIZE + plaintext_bytes + cobblestone.TAG_SIZE * chunks


@dataclass(frozen=True)
class SealedTransfer:
    header: common_pb2.SignedEnvelope
    header_digest: bytes
    wrapped_key: bytes
    trailer_signature: bytes
    ciphertext_bytes: int
    ciphertext_sha512: bytes
    tables: dict[common_pb2.TableCode.ValueType, int]


def seal_transfer(
    *,
    batches: Callable[[], Iterable[records_pb2.RecordBatch]],
    transfer_id: str,
    request_id: str,
    sender: str,
    receiver: ReceiverKeys,
    signing_key: Ed25519PrivateKey,
    out: CiphertextSink,
    created_at: datetime,
    format_version: int = FORMAT_VERSION,
) -> SealedTransfer:
    """Encrypt the batches for ``receiver`` into ``out``; ``batches`` is called once.

    ``format_version`` 1 is kept only so that tests can seal what a sender of
    the previous release sent.
    """
    if format_version not in ACCEPTED_FORMAT_VERSIONS:
        raise InvalidInput("unknown transfer format version")
    plaintext_bytes = 0
    counts: dict[common_pb2.TableCode.ValueType, int] = {}
    staged = _Staging()
    for batch in batches():
        data = delimit(batch)
        staged.write(data)
        plaintext_bytes += len(data)
        rows = len(getattr(batch, common_pb2.TableCode.Name(batch.table).lower()))
        counts[batch.table] = counts.get(batch.table, 0) + rows

    header = records_pb2.TransferHeader(
        format_version=format_version,
        transfer_id=transfer_id,
        request_id=request_id,
        sender_district=sender,
        receiver_district=receiver.district_code,
        receiver_key_id=receiver.hpke_key_id,
        hpke_kem=receiver.hpke_kem,
        hpke_kdf=receiver.hpke_kdf,
        hpke_aead=receiver.hpke_aead,
        payload_suite=PAYLOAD_SUITE,
        tables=[common_pb2.TableCount(table=t, rows=n) for t, n in sorted(counts.items())],
        plaintext_bytes=plaintext_bytes,
        ciphertext_bytes=ciphertext_length(plaintext_bytes),
    )
    header.created_at.FromDatetime(created_at)
    header_body = header.SerializeToString(deterministic=True)
    digest = trailer.header_digest(header_body)
    suite = hpke.suite_from_names(receiver.hpke_kem, receiver.hpke_kdf, receiver.hpke_aead)
    receiver_key = hpke.HpkePublicKey.from_bytes(suite, receiver.hpke_public_key)
    input_key = os.urandom(32)
    wrapped = hpke.wrap_key(input_key, receiver_key, digest)
    signed_header = common_pb2.SignedEnvelope(
        body=header_body,
        signer_district=sender,
        signature=sign_start(header_body, wrapped, signing_key)
        if format_version == FORMAT_VERSION
        else envelope.sign_body(envelope.LABEL_TRANSFER_HEADER, header_body, signing_key),
    )

    sha = hashlib.sha512()
    written = 0

    def emit(data: bytes) -> None:
        nonlocal written
        if data:
            out.write(data)
            sha.update(data)
            written += len(data)

    encryptor = cobblestone.CobblestoneEncryptor(input_key, digest)
    emit(encryptor.header())
    for plaintext in staged.read_back():
        emit(encryptor.update(plaintext))
    emit(encryptor.finalize())
    if written != header.ciphertext_bytes:
        raise IntegrityError("the staged plaintext does not match the transfer header")
    ciphertext_sha512 = sha.digest()
    signature = trailer.sign_trailer(digest, wrapped, ciphertext_sha512, signing_key)
    return SealedTransfer(
        header=signed_header,
        header_digest=digest,
        wrapped_key=wrapped,
        trailer_signature=signature,
        ciphertext_bytes=written,
        ciphertext_sha512=ciphertext_sha512,
        tables=counts,
    )


class _Staging:
    """The serialized batches, kept until the header that the encryption is bound to exists.

    The header declares the plaintext's size and row counts, known only once
    every batch has been built, and building batches (reading and converting
    rows) is what a transfer costs; so they are built once and staged here:
    in memory up to ``STAGING_MEMORY_BYTES``, beyond that in an anonymous
    temporary file. Staged bytes are encrypted (Cobblestone-256) under a
    throwaway key that only this object holds, so no plaintext reaches a disk.
    """

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=STAGING_MEMORY_BYTES)  # noqa: SIM115
        self._key = os.urandom(cobblestone.KEY_SIZE)
        self._encryptor = cobblestone.CobblestoneEncryptor(self._key, _STAGING_CONTEXT)
        self._file.write(self._encryptor.header())
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= _STAGING_PIECE_BYTES:
            self._flush()

    def _flush(self) -> None:
        self._file.write(self._encryptor.update(b"".join(self._pending)))
        self._pending, self._pending_bytes = [], 0

    def read_back(self) -> Iterator[bytes]:
        """The staged plaintext, in pieces of about ``_STAGING_PIECE_BYTES``; then it is gone."""
        self._flush()
        self._file.write(self._encryptor.finalize())
        self._file.seek(0)
        decryptor = cobblestone.CobblestoneDecryptor(self._key, _STAGING_CONTEXT)
        try:
            while piece := self._file.read(_STAGING_PIECE_BYTES):
                yield decryptor.update(piece)
            yield decryptor.finalize()
        finally:
            self._file.close()
            self._key = b""


# Plaintext a transfer stages in memory before it spills to a temporary file.
STAGING_MEMORY_BYTES = 8 * 1024 * 1024
_STAGING_PIECE_BYTES = 1 << 20
_STAGING_CONTEXT = b"rt/v1 staging"


def start_message(header_body: bytes, wrapped_key: bytes) -> bytes:
    """What a version 2 first frame's signature covers: header || SHA-256(wrapped key)."""
    return bytes(header_body) + hashlib.sha256(wrapped_key).digest()


def sign_start(header_body: bytes, wrapped_key: bytes, key: Ed25519PrivateKey) -> bytes:
    """The sender's signature of a version 2 first frame (label ``LABEL_TRANSFER_START``)."""
    return envelope.sign_body(
        envelope.LABEL_TRANSFER_START, start_message(header_body, wrapped_key), key
    )


def _verified_version(
    signed: common_pb2.SignedEnvelope, wrapped_key: bytes | None, key: bytes
) -> int:
    """The format version whose signature verifies (2 first, then 1); IntegrityError if none."""
    if wrapped_key is not None:
        try:
            envelope.verify_body(
                envelope.LABEL_TRANSFER_START,
                start_message(signed.body, wrapped_key),
                signed.signature,
                key,
            )
            return FORMAT_VERSION
        except IntegrityError:
            pass
    envelope.verify_body(envelope.LABEL_TRANSFER_HEADER, signed.body, signed.signature, key)
    return FORMAT_VERSION_V1


def open_header(
    signed: common_pb2.SignedEnvelope,
    *,
    sender: str,
    sender_signing_key: bytes,
    receiver: str,
    receiver_key_id: str | Collection[str],
    wrapped_key: bytes | None = None,
    max_bytes: int = MAX_TRANSFER_BYTES,
) -> tuple[records_pb2.TransferHeader, bytes]:
    """Verify, then parse, then check a transfer header. Returns (header, H).

    ``receiver_key_id``: the id of the HPKE key the header must name, or the
    ids of every key the receiver still holds (its current one and those kept
    after a rotation, ``rt_client.keystore``).

    A version 2 header verifies only with the ``wrapped_key`` sent beside it
    (its signature covers the pair); a version 1 header's signature covers the
    header alone. The version the header declares must be the one whose
    signature verified, so neither can pose as the other.
    """
    key_ids = {receiver_key_id} if isinstance(receiver_key_id, str) else set(receiver_key_id)
    if signed.signer_district != sender:
        raise IntegrityError()
    version = _verified_version(signed, wrapped_key, sender_signing_key)
    header = records_pb2.TransferHeader()
    try:
        header.ParseFromString(signed.body)
    except Exception as exc:  # DecodeError and friends: same answer for every failure
        raise IntegrityError() from exc
    if header.format_version != version and header.format_version in ACCEPTED_FORMAT_VERSIONS:
        raise IntegrityError()
    if (
        header.format_version != version
        or header.sender_district != sender
        or header.receiver_district != receiver
        or header.receiver_key_id not in key_ids
        or header.payload_suite != PAYLOAD_SUITE
    ):
        raise InvalidInput("the transfer header does not fit this receiver")
    hpke.suite_from_names(header.hpke_kem, header.hpke_kdf, header.hpke_aead)
    if header.ciphertext_bytes != ciphertext_length(header.plaintext_bytes):
        raise InvalidInput("the transfer header's sizes are inconsistent")
    if header.ciphertext_bytes > max_bytes:
        raise InvalidInput("the transfer is larger than this district accepts")
    seen: set[int] = set()
    for count in header.tables:
        # An enum value outside the proto's (proto3 keeps unknown ones) is refused
        # here: TableCode.Name() would raise ValueError on it.
        if count.table in seen or count.table not in common_pb2.TableCode.values():
            raise InvalidInput("the transfer header lists a table twice or an unknown table")
        if count.table == common_pb2.TABLE_CODE_UNSPECIFIED or count.rows > MAX_TABLE_ROWS:
            raise InvalidInput("the transfer header's table counts are out of range")
        seen.add(count.table)
    return header, trailer.header_digest(signed.body)


def verify_trailer(
    header_digest: bytes,
    wrapped_key: bytes,
    ciphertext_sha512: bytes,
    signature: bytes,
    sender_signing_key: bytes,
) -> None:
    trailer.verify_trailer(
        header_digest, wrapped_key, ciphertext_sha512, signature, sender_signing_key
    )


def decrypt_batches(
    header: records_pb2.TransferHeader,
    header_digest: bytes,
    wrapped_key: bytes,
    receiver_key: hpke.HpkePrivateKey,
    ciphertext: Iterable[bytes],
) -> Iterator[records_pb2.RecordBatch]:
    """Stream the plaintext batches back, checking them against the header.

    Raises IntegrityError when decryption fails (anywhere, including at the end)
    and InvalidInput when the batches do not match the header's declared tables
    and row counts. Callers must consume the iterator to the end before trusting
    anything it yielded.
    """
    key = hpke.unwrap_key(wrapped_key, receiver_key, header_digest)
    decryptor = cobblestone.CobblestoneDecryptor(key, header_digest)
    reader = BatchReader()
    declared = {count.table: count.rows for count in header.tables}
    seen: dict[int, int] = {}

    def checked(plaintext: bytes) -> Iterator[records_pb2.RecordBatch]:
        for batch in reader.feed(plaintext):
            seen[batch.table] = seen.get(batch.table, 0) + _count_rows(batch)
            if seen[batch.table] > declared.get(batch.table, 0):
                raise InvalidInput("the transfer holds more rows than its header declares")
            yield batch

    for piece in ciphertext:
        yield from checked(decryptor.update(piece))
    # The final short chunk can only be released once the stream has ended.
    yield from checked(decryptor.finalize())
    reader.close()
    if seen != {t: n for t, n in declared.items() if n}:
        raise InvalidInput("the transfer's row counts do not match its header")


class StreamOpener:
    """A version 2 transfer, decrypted and checked against its header as the ciphertext arrives.

    The first frame's signature covers the wrapped key, so the input key is the
    one the sender chose, and a Cobblestone chunk that decrypts under it (with
    ``context = H``, at its position) was written by the sender, in that place.
    Each batch :meth:`feed` yields is therefore the sender's; but the stream may
    still be cut, end early or carry a bad trailer: the caller commits nothing
    until :meth:`finish` has returned. Raises ``IntegrityError`` for bytes that
    do not decrypt, ``InvalidInput`` for batches the header does not declare.
    """

    def __init__(
        self,
        header: records_pb2.TransferHeader,
        header_digest: bytes,
        wrapped_key: bytes,
        receiver_key: hpke.HpkePrivateKey,
    ) -> None:
        if header.format_version != FORMAT_VERSION:
            raise InvalidInput("only a version 2 transfer can be opened as it arrives")
        key = hpke.unwrap_key(wrapped_key, receiver_key, header_digest)
        self._decryptor = cobblestone.CobblestoneDecryptor(key, header_digest)
        self._reader = BatchReader()
        self._declared: dict[int, int] = {count.table: count.rows for count in header.tables}
        self._seen: dict[int, int] = {}
        self._sha = hashlib.sha512()
        self._digest = header_digest
        self._wrapped_key = wrapped_key
        self.received = 0

    def feed(self, ciphertext: bytes) -> Iterator[records_pb2.RecordBatch]:
        """The batches that the chunks completed by ``ciphertext`` hold (consume them all)."""
        self._sha.update(ciphertext)
        self.received += len(ciphertext)
        return _checked(
            self._reader, self._decryptor.update(ciphertext), self._declared, self._seen
        )

    def finish(
        self, signature: bytes, sender_signing_key: bytes
    ) -> tuple[list[records_pb2.RecordBatch], bytes]:
        """Verify the trailer, release the final chunk: (its batches, SHA-512 of the ciphertext)."""
        sha512 = self._sha.digest()
        verify_trailer(self._digest, self._wrapped_key, sha512, signature, sender_signing_key)
        last = list(_checked(self._reader, self._decryptor.finalize(), self._declared, self._seen))
        self._reader.close()
        if self._seen != {t: n for t, n in self._declared.items() if n}:
            raise InvalidInput("the transfer's row counts do not match its header")
        return last, sha512


def _checked(
    reader: BatchReader, plaintext: bytes, declared: dict[int, int], seen: dict[int, int]
) -> Iterator[records_pb2.RecordBatch]:
    for batch in reader.feed(plaintext):
        seen[batch.table] = seen.get(batch.table, 0) + _count_rows(batch)
        if seen[batch.table] > declared.get(batch.table, 0):
            raise InvalidInput("the transfer holds more rows than its header declares")
        yield batch


def _count_rows(batch: records_pb2.RecordBatch) -> int:
    """Rows in the batch's own table; rows in any other field make it invalid."""
    try:
        own = common_pb2.TableCode.Name(batch.table).lower()
    except ValueError as exc:
        raise InvalidInput("a record batch names an unknown table") from exc
    if batch.table == common_pb2.TABLE_CODE_UNSPECIFIED:
        raise InvalidInput("a record batch names no table")
    for field, values in batch.ListFields():
        if field.name not in ("table", own) and values:
            raise InvalidInput("a record batch holds rows of another table")
    return len(getattr(batch, own))
