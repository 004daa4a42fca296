"""Signed checkpoints of the directory log: C2SP tlog-checkpoint in a C2SP signed note.

A checkpoint is the registry's signed statement "the directory log has N
entries and this root hash" (c2sp.org/tlog-checkpoint):

    <origin>\\n<tree size, decimal>\\n<base64 root hash>\\n

wrapped in a signed note (c2sp.org/signed-note): the text, a blank line, then
one line per signature, ``— <key name> <base64(key hash[4] || signature)>``.
Signatures are Ed25519 over the text; a key's hash is the first four bytes of
SHA-256(name || 0x0A || 0x01 || public key). The registry signs with its
directory key (already pinned by every district: a note text contains no NUL
byte, so it can never be taken for a labelled envelope body, which always does);
witnesses add their own Ed25519 signatures to the same note.

The signature is verified before the text is parsed (``open_note``); unknown
signers are ignored, as the spec says, and a note is bounded in size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from rt_client.errors import IntegrityError, InvalidInput
from rt_client.merkle import HASH_SIZE

__all__ = [
    "LOG_ORIGIN",
    "MAX_NOTE_SIZE",
    "Checkpoint",
    "NoteVerifier",
    "COSIGNATURE_V1",
    "MAX_NOTE_SIGNATURES",
    "add_cosignature",
    "add_signature",
    "merge_signatures",
    "open_checkpoint",
    "open_note",
    "parse_verifier_key",
    "sign_note",
    "verifier_key",
]

# The directory log's origin line, and the name of the registry's note key.
LOG_ORIGIN: Final = "records-transfer/directory-log"
MAX_NOTE_SIZE: Final = 4096
_MAX_SIGNATURES: Final = 16
MAX_NOTE_SIGNATURES: Final = _MAX_SIGNATURES
_ALG_ED25519: Final = b"\x01"
# c2sp.org/tlog-cosignature (v1, Ed25519): a witness's timestamped cosignature.
COSIGNATURE_V1: Final = 0x04
_MAX_TIMESTAMP: Final = 2**63 - 1
_SIG_PREFIX: Final = "\u2014 "  # an em dash and a space
_MAX_NAME: Final = 128


@dataclass(frozen=True)
class NoteVerifier:
    """A note key: a name and an Ed25519 public key (its 4-byte hash is derived).

    ``algorithm`` 0x01 signs the note text (c2sp.org/signed-note);
    ``COSIGNATURE_V1`` (0x04) is a witness's timestamped cosignature
    (c2sp.org/tlog-cosignature): Ed25519 over ``cosignature/v1``, ``time <t>``
    and the note text, the line carrying the 8-byte big-endian time before it.
    """

    name: str
    public_key: bytes
    algorithm: int = _ALG_ED25519[0]

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.public_key) != 32:
            raise InvalidInput("a note key is a 32-byte Ed25519 public key")
        if self.algorithm not in (_ALG_ED25519[0], COSIGNATURE_V1):
            raise InvalidInput("a note key is Ed25519 (0x01) or an Ed25519 cosigner (0x04)")

    @property
    def key_hash(self) -> bytes:
        prefix = self.name.encode() + b"\n" + bytes([self.algorithm])
        return hashlib.sha256(prefix + self.public_key).digest()[:4]

    def verify(self, raw: bytes, text: str) -> None:
        """Check a signature line's payload (after the key hash). Raises ``InvalidSignature``."""
        message = text.encode()
        if self.algorithm == COSIGNATURE_V1:
            if len(raw) != 8 + 64 or int.from_bytes(raw[:8], "big") > _MAX_TIMESTAMP:
                raise InvalidSignature
            message = _cosigned_message(int.from_bytes(raw[:8], "big"), text)
            raw = raw[8:]
        Ed25519PublicKey.from_public_bytes(self.public_key).verify(raw, message)


def _cosigned_message(timestamp: int, text: str) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def _check_name(name: str) -> None:
    if (
        not name
        or len(name) > _MAX_NAME
        or any(c.isspace() or c == "+" or not c.isprintable() for c in name)
    ):
        raise InvalidInput("a note key name is 1 to 128 printable characters, no space or '+'")


def verifier_key(verifier: NoteVerifier) -> str:
    """The vkey text ``<name>+<hex key hash>+<base64(0x01 || key)>`` (c2sp.org/signed-note)."""
    encoded = base64.b64encode(bytes([verifier.algorithm]) + verifier.public_key).decode()
    return f"{verifier.name}+{verifier.key_hash.hex()}+{encoded}"


def parse_verifier_key(text: str) -> NoteVerifier:
    """Parse a vkey. Raises ``InvalidInput`` if it is malformed or its hash does not match."""
    parts = text.strip().split("+", 2)  # the base64 key itself may hold a '+'
    if len(parts) != 3:
        raise InvalidInput("a witness key reads <name>+<key hash>+<base64 key>")
    name, hash_hex, key_b64 = parts
    try:
        raw = base64.b64decode(key_b64, validate=True)
        expected = bytes.fromhex(hash_hex)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("a witness key's hash or key is not hex / base64") from exc
    if len(raw) != 33 or raw[0] not in (_ALG_ED25519[0], COSIGNATURE_V1):
        raise InvalidInput("a witness key must be an Ed25519 note or cosignature/v1 key")
    verifier = NoteVerifier(name, raw[1:], raw[0])
    if verifier.key_hash != expected:
        raise InvalidInput(f"witness key {name}: its key hash does not match its key")
    return verifier


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> bytes:
    """A signed note of ``text`` (ending in a newline) with one signature."""
    _check_text(text)
    return (text + "\n" + _signature_line(text, name, key)).encode()


def add_signature(note: bytes, name: str, key: Ed25519PrivateKey) -> bytes:
    """``note`` with one more signature line (a witness's cosignature)."""
    text, lines = _split(note)
    return (
        text + "\n" + "".join(f"{line}\n" for line in lines) + _signature_line(text, name, key)
    ).encode()


def merge_signatures(
    stored: bytes, cosigned: bytes, first: Sequence[NoteVerifier] = ()
) -> tuple[bytes, int]:
    """``stored`` with the signature lines of ``cosigned`` (the same text) it lacks, bounded.

    The first line (the log's own signature) stays first; then the lines of
    the keys in ``first``, in that order (the witnesses districts require);
    then the others, newest first. One line per key (a newer one replaces an
    older). Lines that would take the note past ``MAX_NOTE_SIZE`` bytes or
    ``MAX_NOTE_SIGNATURES`` lines are left out, so every district can still
    read it. Returns the note and how many lines were left out. Raises
    ``IntegrityError`` if the two notes are malformed or of different texts.
    """
    text, ours = _split(stored)
    other_text, theirs = _split(cosigned)
    if text != other_text or not ours:
        raise IntegrityError("the cosigned note is not a copy of the stored one")
    rank = {(v.name, v.key_hash): i for i, v in enumerate(first)}
    own = _line_key(ours[0])
    by_key: dict[tuple[str, bytes], str] = {}
    for line in [*reversed(theirs), *reversed(ours[1:])]:
        # Newest first: the cosigned note's lines, its last first, then ours, last first.
        key = _line_key(line)
        if key != own and key not in by_key:
            by_key[key] = line
    ordered = sorted(
        by_key.items(), key=lambda kv: rank.get(kv[0], len(rank))
    )  # stable: unranked keep newest-first order
    lines = [ours[0]]
    size = len(text.encode()) + 1 + len(ours[0].encode()) + 1
    left_out = 0
    for _, line in ordered:
        cost = len(line.encode()) + 1
        if len(lines) >= _MAX_SIGNATURES or size + cost > MAX_NOTE_SIZE:
            left_out += 1
            continue
        lines.append(line)
        size += cost
    note = (text + "\n" + "".join(f"{line}\n" for line in lines)).encode()
    return note, left_out


def _line_key(line: str) -> tuple[str, bytes]:
    if not line.startswith(_SIG_PREFIX):
        raise IntegrityError("signed note malformed")
    name, _, encoded = line[len(_SIG_PREFIX) :].partition(" ")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise IntegrityError("signed note malformed") from exc
    if len(raw) < 5:
        raise IntegrityError("signed note malformed")
    return name, raw[:4]


def add_cosignature(note: bytes, name: str, key: Ed25519PrivateKey, timestamp: int) -> bytes:
    """``note`` with a witness's c2sp.org/tlog-cosignature v1 line, made at ``timestamp``.

    Raises ``IntegrityError`` for a malformed note, ``InvalidInput`` for a bad time.
    """
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise InvalidInput("a cosignature's time is a POSIX timestamp")
    text, lines = _split(note)
    verifier = NoteVerifier(name, key.public_key().public_bytes_raw(), COSIGNATURE_V1)
    payload = timestamp.to_bytes(8, "big") + key.sign(_cosigned_message(timestamp, text))
    new = f"{_SIG_PREFIX}{name} {base64.b64encode(verifier.key_hash + payload).decode()}\n"
    return (text + "\n" + "".join(f"{line}\n" for line in lines) + new).encode()


def _signature_line(text: str, name: str, key: Ed25519PrivateKey) -> str:
    verifier = NoteVerifier(name, key.public_key().public_bytes_raw())
    signature = key.sign(text.encode())
    encoded = base64.b64encode(verifier.key_hash + signature).decode()
    return f"{_SIG_PREFIX}{name} {encoded}\n"


def _check_text(text: str) -> None:
    if not text.endswith("\n") or "\n\n" in text or "\x00" in text or text.startswith("\n"):
        raise InvalidInput("a note text is non-empty lines, each ending in a newline")


def _split(note: bytes) -> tuple[str, list[str]]:
    if len(note) > MAX_NOTE_SIZE:
        raise IntegrityError("signed note too large")
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntegrityError("signed note is not UTF-8") from exc
    at = decoded.rfind("\n\n")
    if at < 0 or not decoded.endswith("\n"):
        raise IntegrityError("signed note has no signature block")
    text, block = decoded[: at + 1], decoded[at + 2 :]
    lines = block[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES or "\x00" in text:
        raise IntegrityError("signed note malformed")
    return text, lines


def open_note(note: bytes, verifiers: Iterable[NoteVerifier]) -> tuple[str, frozenset[str]]:
    """Verify ``note`` and return its text and the names of the known keys that signed it.

    Lines by unknown keys are skipped (c2sp.org/signed-note); a line by a known
    key that does not verify is refused. Raises ``IntegrityError`` if no known
    key signed it or any known key's signature is bad.
    """
    text, lines = _split(note)
    by_hash: Mapping[tuple[str, bytes], NoteVerifier] = {(v.name, v.key_hash): v for v in verifiers}
    signed: set[str] = set()
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise IntegrityError("signed note malformed")
        name, _, encoded = line[len(_SIG_PREFIX) :].partition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise IntegrityError("signed note malformed") from exc
        if len(raw) < 5:
            raise IntegrityError("signed note malformed")
        verifier = by_hash.get((name, raw[:4]))
        if verifier is None:
            continue
        try:
            verifier.verify(raw[4:], text)
        except InvalidSignature as exc:
            raise IntegrityError(f"signed note: the signature of {name} does not verify") from exc
        signed.add(name)
    if not signed:
        raise IntegrityError("signed note: signed by no known key")
    return text, frozenset(signed)


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint (c2sp.org/tlog-checkpoint): origin, tree size, root hash."""

    origin: str
    size: int
    root_hash: bytes
    note: bytes  # the signed note it came in, with every signature
    signers: frozenset[str]

    @staticmethod
    def text(origin: str, size: int, root_hash: bytes) -> str:
        return f"{origin}\n{size}\n{base64.b64encode(root_hash).decode()}\n"


def open_checkpoint(
    note: bytes, log_key: NoteVerifier, witnesses: Iterable[NoteVerifier] = ()
) -> Checkpoint:
    """Verify a checkpoint note signed by ``log_key`` (and maybe witnesses) and parse it.

    Raises ``IntegrityError`` if the log's signature is missing or bad, a known
    witness's is bad, or the text is not a checkpoint of ``log_key.name``.
    """
    text, signers = open_note(note, [log_key, *witnesses])
    if log_key.name not in signers:
        raise IntegrityError("checkpoint is not signed by the registry's log key")
    lines = text.split("\n")[:-1]
    if len(lines) < 3 or lines[0] != log_key.name:
        raise IntegrityError("checkpoint is not of this directory log")
    size_text, root_text = lines[1], lines[2]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise IntegrityError("checkpoint's tree size is malformed")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error as exc:
        raise IntegrityError("checkpoint's root hash is malformed") from exc
    if len(root) != HASH_SIZE or len(size_text) > 20:
        raise IntegrityError("checkpoint's root hash is malformed")
    return Checkpoint(
        origin=lines[0],
        size=int(size_text),
        root_hash=root,
        note=bytes(note),
        signers=signers - {log_key.name},
    )
