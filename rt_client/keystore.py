"""Key material beside the identity: new keys on their way in, old HPKE keys on their way out.

**Pending keys** (``pending-keys/``) make every key change crash-safe. New keys
are written there *before* the registry is asked to bind them (``rt enroll``,
``rt keys rotate``, certificate renewal) and promoted into the identity files
only after its answer verifies. A process that dies in between finds them on
its next run and finishes with the same keys: the registry answers again for
keys it already holds (``registry.enrollment``), so an enrollment's one-time
code is not burnt and a rotated district is not locked out.

**Retired HPKE keys** (``hpke-retired/``) are kept after an HPKE rotation until
their ``not_after``, so a transfer another district sealed to the old key
before it saw the new entry still opens (the transfer header names the key id
it was sealed to). After ``not_after`` the key file is deleted.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rt_client.crypto.hpke import HpkePrivateKey, suite_from_name
from rt_client.errors import ConfigError, InvalidInput
from rt_client.identity import (
    HPKE_KEY_FILE,
    SIGNING_KEY_FILE,
    TLS_KEY_FILE,
    DistrictKeys,
    make_csr,
    write_file_atomically,
)
from rt_client.ids import DistrictCode

__all__ = [
    "KEYS_LOCK_FILE",
    "PENDING_DIR",
    "RETIRED_HPKE_DIR",
    "RetiredHpkeKey",
    "clear_pending",
    "hpke_key_in",
    "key_change_lock",
    "hpke_keyring",
    "load_pending",
    "retire_hpke_key",
    "retired_hpke_keys",
    "save_pending",
]

PENDING_DIR: Final = "pending-keys"
KEYS_LOCK_FILE: Final = ".keys.lock"
RETIRED_HPKE_DIR: Final = "hpke-retired"
_ENDPOINTS_FILE: Final = "endpoints.json"


@dataclass(frozen=True)
class RetiredHpkeKey:
    key: HpkePrivateKey
    not_after: datetime

    @property
    def key_id(self) -> str:
        return self.key.public_key().key_id()


def _hpke_doc(key: HpkePrivateKey, **extra: str) -> bytes:
    doc = {
        "suite": key.suite.name,
        "private_key": base64.b64encode(key.private_bytes()).decode("ascii"),
        **extra,
    }
    return json.dumps(doc).encode()


def _hpke_from(raw: bytes) -> tuple[HpkePrivateKey, dict[str, str]]:
    doc = json.loads(raw)
    suite = suite_from_name(doc["suite"])
    key = HpkePrivateKey.from_bytes(suite, base64.b64decode(doc["private_key"], validate=True))
    return key, doc


@contextlib.contextmanager
def key_change_lock(data_dir: Path) -> Iterator[None]:
    """Held while keys change or are read for use: one key change at a time, across
    processes (``rt keys rotate`` beside a running ``rt serve``) and threads.

    An advisory ``flock`` on ``.keys.lock`` in the data directory, released when
    the holder exits, however it exits. Not re-entrant. Raises ``ConfigError``.
    """
    path = Path(data_dir) / KEYS_LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def hpke_key_in(path: Path) -> HpkePrivateKey | None:
    """The HPKE private key stored in ``path`` (a key file of ours), or None if unreadable."""
    try:
        return _hpke_from(path.read_bytes())[0]
    except (OSError, ValueError, KeyError, TypeError, InvalidInput):
        return None


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def save_pending(data_dir: Path, keys: DistrictKeys) -> None:
    """Write ``keys`` (all three private keys and the endpoints) to ``pending-keys/``.

    Raises ``ConfigError`` if they cannot be written.
    """
    folder = Path(data_dir) / PENDING_DIR
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    try:
        _private_dir(Path(data_dir))
        _private_dir(folder)
        write_file_atomically(folder / TLS_KEY_FILE, keys.tls_key_pem(), 0o600)
        write_file_atomically(folder / HPKE_KEY_FILE, _hpke_doc(keys.hpke_key), 0o600)
        signing = keys.signing_key.private_bytes(pem, pkcs8, serialization.NoEncryption())
        write_file_atomically(folder / SIGNING_KEY_FILE, signing, 0o600)
        # Written last: its presence says the set is complete.
        write_file_atomically(
            folder / _ENDPOINTS_FILE, json.dumps(list(keys.endpoints)).encode(), 0o600
        )
    except OSError as exc:
        raise ConfigError(f"cannot write new keys to {folder}: {exc.strerror or exc}") from exc


def load_pending(data_dir: Path, code: DistrictCode) -> DistrictKeys | None:
    """The complete pending key set of ``data_dir``, or None if there is none.

    An incomplete set (a crash while writing it, before the registry was asked)
    is removed and None returned. Raises ``ConfigError`` for a malformed one.
    """
    folder = Path(data_dir) / PENDING_DIR
    if not folder.is_dir():
        return None
    if not (folder / _ENDPOINTS_FILE).is_file():
        clear_pending(data_dir)
        return None
    try:
        tls_key = serialization.load_pem_private_key((folder / TLS_KEY_FILE).read_bytes(), None)
        signing_key = serialization.load_pem_private_key(
            (folder / SIGNING_KEY_FILE).read_bytes(), None
        )
        hpke_key, _ = _hpke_from((folder / HPKE_KEY_FILE).read_bytes())
        endpoints = tuple(json.loads((folder / _ENDPOINTS_FILE).read_bytes()))
    except (OSError, ValueError, KeyError, TypeError, InvalidInput) as exc:
        raise ConfigError(
            f"{folder} holds unreadable new keys; remove the folder and try again"
        ) from exc
    if not isinstance(tls_key, ec.EllipticCurvePrivateKey) or not isinstance(
        signing_key, Ed25519PrivateKey
    ):
        raise ConfigError(f"{folder} holds keys of the wrong type; remove the folder")
    return DistrictKeys(
        code=code,
        tls_key=tls_key,
        csr=make_csr(tls_key, code),
        hpke_key=hpke_key,
        signing_key=signing_key,
        endpoints=endpoints,
    )


def clear_pending(data_dir: Path) -> None:
    """Remove ``pending-keys/`` (after its keys were promoted, or abandoned)."""
    shutil.rmtree(Path(data_dir) / PENDING_DIR, ignore_errors=True)


def retire_hpke_key(data_dir: Path, key: HpkePrivateKey, not_after: datetime) -> None:
    """Keep ``key`` (replaced by a rotation) in ``hpke-retired/`` until ``not_after``.

    Raises ``ConfigError`` if it cannot be written.
    """
    folder = Path(data_dir) / RETIRED_HPKE_DIR
    try:
        _private_dir(folder)
        write_file_atomically(
            folder / f"{key.public_key().key_id()}.json",
            _hpke_doc(key, not_after=not_after.isoformat()),
            0o600,
        )
    except OSError as exc:
        raise ConfigError(f"cannot keep the old HPKE key in {folder}: {exc}") from exc


def retired_hpke_keys(data_dir: Path, now: datetime) -> list[RetiredHpkeKey]:
    """The retired HPKE keys still within their window; expired ones are deleted."""
    folder = Path(data_dir) / RETIRED_HPKE_DIR
    kept: list[RetiredHpkeKey] = []
    if not folder.is_dir():
        return kept
    for path in sorted(folder.glob("*.json")):
        try:
            key, doc = _hpke_from(path.read_bytes())
            not_after = datetime.fromisoformat(doc["not_after"])
        except (OSError, ValueError, KeyError, TypeError, InvalidInput):
            continue  # not ours to judge: left for the admin (rt doctor names it)
        if not_after <= now:
            path.unlink(missing_ok=True)
            continue
        kept.append(RetiredHpkeKey(key, not_after))
    return kept


def hpke_keyring(
    current: HpkePrivateKey, data_dir: Path, now: datetime
) -> dict[str, HpkePrivateKey]:
    """Key id -> private key: the current HPKE key and the retired ones still in their window."""
    ring = {r.key_id: r.key for r in retired_hpke_keys(data_dir, now)}
    ring[current.public_key().key_id()] = current
    return ring
