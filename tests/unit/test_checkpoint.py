"""rt_client.checkpoint: C2SP signed notes (Go sumdb/note's published example) and checkpoints."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rt_client.checkpoint import (
    COSIGNATURE_V1,
    LOG_ORIGIN,
    Checkpoint,
    NoteVerifier,
    add_cosignature,
    add_signature,
    open_checkpoint,
    open_note,
    parse_verifier_key,
    sign_note,
    verifier_key,
)
from rt_client.errors import IntegrityError, InvalidInput

# The example of golang.org/x/mod/sumdb/note's documentation (c2sp.org/signed-note's
# reference implementation): its keys, text and signed note, byte for byte.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXg"
    "KvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()


def _go_private_key() -> Ed25519PrivateKey:
    raw = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert raw[0] == 1
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


def test_go_reference_note_is_reproduced_and_verifies() -> None:
    verifier = parse_verifier_key(GO_VKEY)
    assert verifier.key_hash.hex() == "c74f20a3"
    assert verifier_key(verifier) == GO_VKEY
    assert sign_note(GO_TEXT, "PeterNeumann", _go_private_key()) == GO_NOTE
    assert open_note(GO_NOTE, [verifier]) == (GO_TEXT, frozenset({"PeterNeumann"}))
    with pytest.raises(IntegrityError):
        open_note(GO_NOTE.replace(b"cryptography", b"cryptographY"), [verifier])


def test_unknown_signers_are_skipped_and_a_note_needs_one_known() -> None:
    witness = Ed25519PrivateKey.generate()
    cosigned = add_signature(GO_NOTE, "county-office", witness)
    assert open_note(cosigned, [parse_verifier_key(GO_VKEY)])[1] == frozenset({"PeterNeumann"})
    other = NoteVerifier("someone", Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    with pytest.raises(IntegrityError):
        open_note(GO_NOTE, [other])


@pytest.mark.parametrize(
    "bad",
    [
        b"x" * 5000,
        b"\xff\xfe\n\n",
        b"no signature block\n",
        GO_NOTE.replace("\u2014".encode(), b"-"),
        GO_NOTE.replace(b"x08go", b"!!!go"),
    ],
)
def test_malformed_notes_are_refused(bad: bytes) -> None:
    with pytest.raises(IntegrityError):
        open_note(bad, [parse_verifier_key(GO_VKEY)])


def test_checkpoint_roundtrip_and_refusals() -> None:
    key = Ed25519PrivateKey.generate()
    log = NoteVerifier(LOG_ORIGIN, key.public_key().public_bytes_raw())
    note = sign_note(Checkpoint.text(LOG_ORIGIN, 7, b"\x01" * 32), LOG_ORIGIN, key)
    assert note.decode().startswith(f"{LOG_ORIGIN}\n7\nAQEB")
    cp = open_checkpoint(note, log)
    assert (cp.size, cp.root_hash, cp.signers) == (7, b"\x01" * 32, frozenset())
    witness = Ed25519PrivateKey.generate()
    wv = NoteVerifier("state", witness.public_key().public_bytes_raw())
    assert open_checkpoint(add_signature(note, "state", witness), log, [wv]).signers == {"state"}
    # Signed by someone else, another origin, a malformed size: refused.
    with pytest.raises(IntegrityError):
        open_checkpoint(
            sign_note(Checkpoint.text(LOG_ORIGIN, 7, b"\x01" * 32), "state", witness), log
        )
    with pytest.raises(IntegrityError):
        open_checkpoint(sign_note("other/log\n7\nAQ==\n", LOG_ORIGIN, key), log)
    with pytest.raises(IntegrityError):
        open_checkpoint(sign_note(f"{LOG_ORIGIN}\n07\n{'A' * 43}=\n", LOG_ORIGIN, key), log)
    with pytest.raises(InvalidInput):
        parse_verifier_key("state+00000000+" + base64.b64encode(b"\x01" + b"\x02" * 32).decode())


def test_a_verifier_key_whose_base64_holds_a_plus_parses() -> None:
    # A published Ed25519 vkey (transparency-dev/formats' note tests) with '+' in its key.
    plus = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"
    verifier = parse_verifier_key(plus)
    assert verifier.name == "TEST" and verifier_key(verifier) == plus


def test_witness_cosignatures_are_c2sp_tlog_cosignature_v1() -> None:
    """The line is built here from c2sp.org/tlog-cosignature's text, byte for byte: key ID
    SHA-256(name || "\\n" || 0x04 || key)[:4], then the u64 big-endian time, then Ed25519 over
    "cosignature/v1\\ntime <t>\\n" and the note text (its example time: 1679315147)."""
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    public = key.public_key().public_bytes_raw()
    name, when = "witness.example.com/w1", 1679315147
    text = Checkpoint.text(LOG_ORIGIN, 20852163, bytes(32))
    note = sign_note(text, LOG_ORIGIN, _go_private_key())
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    message = b"cosignature/v1\ntime 1679315147\n" + text.encode()
    payload = key_id + struct.pack(">Q", when) + key.sign(message)
    expected = note + f"\u2014 {name} {base64.b64encode(payload).decode()}\n".encode()
    assert add_cosignature(note, name, key, when) == expected

    witness = NoteVerifier(name, public, COSIGNATURE_V1)
    vkey = verifier_key(witness)
    assert vkey.split("+")[1] == key_id.hex() and parse_verifier_key(vkey) == witness
    log = NoteVerifier(LOG_ORIGIN, _go_private_key().public_key().public_bytes_raw())
    assert open_note(expected, [log, witness])[1] == {LOG_ORIGIN, name}
    # A plain note signature by the same key is not a cosignature (other key ID): skipped.
    plain = add_signature(note, name, key)
    assert open_note(plain, [log, witness])[1] == {LOG_ORIGIN}
    # Another time than the one signed: refused.
    forged = key_id + struct.pack(">Q", when + 1) + payload[12:]
    bad = note + f"\u2014 {name} {base64.b64encode(forged).decode()}\n".encode()
    with pytest.raises(IntegrityError, match="does not verify"):
        open_note(bad, [log, witness])
