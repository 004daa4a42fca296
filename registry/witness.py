"""``rt-registry witness``: an independent party that cosigns the directory log's checkpoints.

A witness (a county office, the state) holds its own Ed25519 key and a small
state file: the last checkpoint it cosigned. It cosigns a new checkpoint only
after checking, with the registry's consistency proof, that the new tree
extends the one it last cosigned (RFC 9162 2.1.4.2); so two checkpoints a
witness signed are always consistent, and a registry that forks its log
cannot get both forks witnessed. Districts requiring k of n witnesses
(``witnesses_required``) therefore need k honest witnesses fooled at once.
Its cosignatures are c2sp.org/tlog-cosignature v1 lines (timestamped; key type
0x04), so any C2SP-aware client can check them.

The exchange is by files, so a witness needs no account at the registry:

    rt-registry --home REG log checkpoint --from-size N > request.json   (registry operator)
    rt-registry witness cosign --key K --state S request.json > cosigned (witness)
    rt-registry --home REG log cosign cosigned                           (registry operator)
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rt_client import merkle
from rt_client.checkpoint import (
    COSIGNATURE_V1,
    LOG_ORIGIN,
    NoteVerifier,
    add_cosignature,
    open_checkpoint,
    verifier_key,
)
from rt_client.directory import Clock, utc_now
from rt_client.errors import ConfigError, IntegrityError, InvalidInput
from rt_client.identity import write_file_atomically

__all__ = ["WitnessRequest", "cosign", "init_witness", "load_witness_key"]


@dataclass(frozen=True)
class WitnessRequest:
    """A checkpoint to cosign and the consistency proof from ``old_size``."""

    note: bytes
    old_size: int
    proof: list[bytes]

    def to_json(self) -> str:
        return json.dumps(
            {
                "checkpoint": base64.b64encode(self.note).decode(),
                "old_size": self.old_size,
                "proof": [base64.b64encode(h).decode() for h in self.proof],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> WitnessRequest:
        """Raises ``InvalidInput`` if the file is not a witness request."""
        try:
            doc = json.loads(text)
            return cls(
                note=base64.b64decode(doc["checkpoint"], validate=True),
                old_size=int(doc["old_size"]),
                proof=[base64.b64decode(h, validate=True) for h in doc["proof"]],
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise InvalidInput(
                "not a witness request (make one with `rt-registry log checkpoint --from-size N`)"
            ) from exc


def init_witness(name: str, key_path: Path) -> str:
    """Create a witness key (mode 0600); returns its verifier key for districts' ``witness_keys``.

    Raises ``ConfigError`` if the file exists, ``InvalidInput`` for a bad name.
    """
    key = Ed25519PrivateKey.generate()
    verifier = NoteVerifier(name, key.public_key().public_bytes_raw(), COSIGNATURE_V1)
    if key_path.exists():
        raise ConfigError(f"{key_path} already exists; a witness keeps its key")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_file_atomically(key_path, pem, 0o600)
    key_path.with_name(key_path.name + ".name").write_text(name + "\n")
    return verifier_key(verifier)


def load_witness_key(key_path: Path) -> tuple[str, Ed25519PrivateKey]:
    """(name, key). Raises ``ConfigError``."""
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        name = key_path.with_name(key_path.name + ".name").read_text().strip()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the witness key {key_path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{key_path} is not an Ed25519 key")
    return name, key


def cosign(
    request: WitnessRequest,
    log_key: bytes,
    name: str,
    key: Ed25519PrivateKey,
    state_path: Path,
    clock: Clock = utc_now,
) -> bytes:
    """Check ``request`` against the last checkpoint cosigned and cosign it.

    Raises ``IntegrityError`` (and changes nothing) if the checkpoint is not the
    registry's, is older than the last cosigned, or does not extend it.
    """
    log = NoteVerifier(LOG_ORIGIN, log_key)
    new = open_checkpoint(request.note, log)
    last: dict[str, Any] | None = None
    if state_path.exists():
        try:
            last = json.loads(state_path.read_text())
            old_size, old_root = int(last["size"]), base64.b64decode(last["root"], validate=True)
        except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ConfigError(f"the witness state {state_path} is damaged") from exc
        if new.size < old_size:
            raise IntegrityError(
                f"refused: checkpoint {new.size} is older than checkpoint {old_size} "
                "this witness already cosigned"
            )
        if request.old_size != old_size:
            raise IntegrityError(
                f"refused: the request proves consistency from size {request.old_size}, this "
                f"witness last cosigned size {old_size}; ask for `--from-size {old_size}`"
            )
        try:
            merkle.verify_consistency(old_size, new.size, old_root, new.root_hash, request.proof)
        except IntegrityError as exc:
            raise IntegrityError(
                f"refused: checkpoint {new.size} does not extend checkpoint {old_size} this "
                "witness cosigned: the registry rewrote or forked its log"
            ) from exc
    state = {"size": new.size, "root": base64.b64encode(new.root_hash).decode()}
    cosigned = add_cosignature(request.note, name, key, int(clock().timestamp()))
    write_file_atomically(state_path, json.dumps(state).encode(), 0o600)
    return cosigned
