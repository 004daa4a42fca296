"""Time-based one-time passwords (RFC 6238, HOTP of RFC 4226 over a 30-second step).

The second factor of every staff account: SHA-1, six digits, 30 seconds, the
parameters every authenticator app uses by default (Google Authenticator,
Microsoft Authenticator, FreeOTP). A code is accepted one step either side of
now (clock drift, RFC 6238 section 5.2), and each step at most once per
account (the caller keeps the last step used: section 5.2, "MUST NOT accept
the second attempt of the same OTP after the successful validation").
"""

from __future__ import annotations

import base64
import hmac
import secrets
import struct
from urllib.parse import quote

__all__ = [
    "STEP_SECONDS",
    "hotp",
    "matching_step",
    "new_secret",
    "provisioning_uri",
    "totp",
]

STEP_SECONDS = 30
DIGITS = 6


def new_secret() -> str:
    """A fresh 160-bit shared secret, base32 without padding (as authenticator apps take it)."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=")


def _key(secret_b32: str) -> bytes:
    padded = secret_b32.upper() + "=" * (-len(secret_b32) % 8)
    return base64.b32decode(padded)


def hotp(key: bytes, counter: int, digits: int = DIGITS, digest: str = "sha1") -> str:
    """RFC 4226 section 5.3: dynamic truncation of HMAC(key, counter)."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    code = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


def totp(
    key: bytes,
    unix_time: float,
    digits: int = DIGITS,
    digest: str = "sha1",
    step: int = STEP_SECONDS,
) -> str:
    """RFC 6238 section 4: HOTP over T = floor(unix_time / step)."""
    return hotp(key, int(unix_time // step), digits, digest)


def matching_step(secret_b32: str, code: str, unix_time: float, after_step: int) -> int | None:
    """The time step (now, or one either side) whose code ``code`` is, if later than
    ``after_step`` (the last step this account used); else None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    key = _key(secret_b32)
    now_step = int(unix_time // STEP_SECONDS)
    found = None
    for step in (now_step - 1, now_step, now_step + 1):
        # Compare every candidate (no early exit) in constant time.
        if hmac.compare_digest(hotp(key, step), code) and step > after_step:
            found = step
    return found


def provisioning_uri(secret_b32: str, account: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads (as a QR code or typed in)."""
    label = quote(f"{issuer}:{account}")
    return f"otpauth://totp/{label}?secret={secret_b32}&issuer={quote(issuer)}&digits=6&period=30"


def main(argv: list[str] | None = None) -> int:
    """``python -m rt_client.console.totp SECRET``: the current code (for a demo or a test
    login; a person uses an authenticator app)."""
    import sys
    import time

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m rt_client.console.totp BASE32-SECRET", file=sys.stderr)
        return 2
    try:
        key = _key(args[0])
    except ValueError:
        print("that is not a base32 TOTP secret (as rt staff add printed it)", file=sys.stderr)
        return 2
    print(totp(key, time.time()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
