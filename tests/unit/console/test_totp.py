"""RFC 6238 Appendix B's test vectors, and the console's acceptance rules for a code."""

from __future__ import annotations

import base64

import pytest

from rt_client.console import totp

SEED_SHA1 = b"12345678901234567890"
SEED_SHA256 = b"12345678901234567890123456789012"
SEED_SHA512 = b"1234567890" * 6 + b"1234"

# (time, sha1, sha256, sha512): RFC 6238 Appendix B, 8 digits, 30-second step.
VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize(("t", "sha1", "sha256", "sha512"), VECTORS)
def test_rfc6238_appendix_b(t: int, sha1: str, sha256: str, sha512: str) -> None:
    assert totp.totp(SEED_SHA1, t, digits=8, digest="sha1") == sha1
    assert totp.totp(SEED_SHA256, t, digits=8, digest="sha256") == sha256
    assert totp.totp(SEED_SHA512, t, digits=8, digest="sha512") == sha512


def test_a_code_is_accepted_one_step_either_side_and_each_step_once() -> None:
    secret = base64.b32encode(SEED_SHA1).decode()
    key = SEED_SHA1
    now = 1111111111.0
    step = int(now // 30)
    assert totp.matching_step(secret, totp.totp(key, now), now, 0) == step
    assert totp.matching_step(secret, totp.totp(key, now - 30), now, 0) == step - 1
    assert totp.matching_step(secret, totp.totp(key, now + 30), now, 0) == step + 1
    assert totp.matching_step(secret, totp.totp(key, now + 60), now, 0) is None
    # Used once (the account's last step is this one): refused the second time.
    assert totp.matching_step(secret, totp.totp(key, now), now, step) is None
    assert totp.matching_step(secret, "12345", now, 0) is None
    assert totp.matching_step(secret, "abcdef", now, 0) is None
