"""Authorization codes: issued once, stored only as a salted scrypt hash (RFC 7914).

A code carries 256 bits of entropy (``secrets.token_urlsafe(32)``), so it cannot
be guessed; the slow salted hash means a copy of the registry database does not
hand out enrollments either. Hashes are self-describing
(``scrypt$<n>$<r>$<p>$<salt>$<hash>``) so the cost can be raised later without
invalidating codes already issued.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
from typing import Final

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = [
    "MAX_CODE_LENGTH",
    "hash_authorization_code",
    "new_authorization_code",
    "verify_authorization_code",
]

_SALT_SIZE: Final = 16
_HASH_SIZE: Final = 32
_R: Final = 8
_P: Final = 1
# Bounds the work an unauthenticated caller can make us hash.
MAX_CODE_LENGTH: Final = 128


def new_authorization_code() -> str:
    """A fresh authorization code: 43 URL-safe characters, 256 bits of entropy."""
    return secrets.token_urlsafe(32)


def hash_authorization_code(code: str, n: int) -> str:
    """The self-describing salted scrypt hash of ``code`` at cost ``n``."""
    salt = os.urandom(_SALT_SIZE)
    digest = _scrypt(code, salt, n, _R, _P)
    return "$".join(["scrypt", str(n), str(_R), str(_P), _b64(salt), _b64(digest)])


def verify_authorization_code(code: str, stored: str) -> bool:
    """True if ``code`` hashes to ``stored``. Compares in constant time; never raises."""
    try:
        scheme, n_text, r_text, p_text, salt_text, digest_text = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_text, validate=True)
        expected = base64.b64decode(digest_text, validate=True)
        n, r, p = int(n_text), int(r_text), int(p_text)
    except ValueError:
        return False
    candidate = _scrypt(code[:MAX_CODE_LENGTH], salt, n, r, p)
    return hmac.compare_digest(candidate, expected)


def _scrypt(code: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=_HASH_SIZE, n=n, r=r, p=p).derive(code.encode("utf-8"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
