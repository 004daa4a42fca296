"""Staff accounts: Argon2id hashes, one refusal message, lockout with back-off (injected clock)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from rt_client.console import totp
from rt_client.console.staff import LoginRefused, StaffError, StaffStore
from rt_client.console.web import safe_next

PASSWORD = "correct horse battery"
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # still Argon2id


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def code(secret: str, at: float) -> str:
    return totp.totp(base64.b32decode(secret + "=" * (-len(secret) % 8)), at)


def test_password_is_argon2id_and_login_needs_password_and_code(tmp_path: Path) -> None:
    clock = Clock()
    store = StaffStore(tmp_path / "console.db", clock, CHEAP)
    secret = store.add("ana", "Ana Ruiz", "requester", PASSWORD)
    raw = (tmp_path / "console.db").read_bytes()
    assert b"$argon2id$" in raw and PASSWORD.encode() not in raw
    assert (tmp_path / "console.db").stat().st_mode & 0o077 == 0
    with pytest.raises(LoginRefused, match="wrong user name, password or code"):
        store.authenticate("ana", "not the password", code(secret, clock.now))
    with pytest.raises(LoginRefused, match="wrong user name, password or code"):
        store.authenticate("nobody", PASSWORD, code(secret, clock.now))
    assert store.authenticate("ana", PASSWORD, code(secret, clock.now)).role == "requester"
    with pytest.raises(LoginRefused):  # the same code twice (RFC 6238 section 5.2)
        store.authenticate("ana", PASSWORD, code(secret, clock.now))


def test_lockout_backs_off_and_refuses_even_the_right_password(tmp_path: Path) -> None:
    clock = Clock()
    store = StaffStore(tmp_path / "console.db", clock, CHEAP)
    secret = store.add("bo", "Bo Lee", "responder", PASSWORD)
    for _ in range(5):
        with pytest.raises(LoginRefused, match="wrong"):
            store.authenticate("bo", "guess-guess-guess", code(secret, clock.now))
    with pytest.raises(LoginRefused, match="locked for 30 more seconds"):
        store.authenticate("bo", PASSWORD, code(secret, clock.now))
    clock.now += 31
    with pytest.raises(LoginRefused, match="wrong"):
        store.authenticate("bo", "guess-guess-guess", code(secret, clock.now))
    with pytest.raises(LoginRefused, match="locked for 60 more seconds"):
        store.authenticate("bo", PASSWORD, code(secret, clock.now))
    clock.now += 61
    assert store.authenticate("bo", PASSWORD, code(secret, clock.now)).username == "bo"


def test_disable_and_reset(tmp_path: Path) -> None:
    clock = Clock()
    store = StaffStore(tmp_path / "console.db", clock, CHEAP)
    secret = store.add("cy", "Cy Park", "admin", PASSWORD)
    store.disable("cy")
    with pytest.raises(LoginRefused, match="disabled"):
        store.authenticate("cy", PASSWORD, code(secret, clock.now))
    new_secret = store.reset("cy", "another long password")
    clock.now += 30
    assert store.authenticate("cy", "another long password", code(new_secret, clock.now))
    with pytest.raises(StaffError, match="already"):
        store.add("cy", "Cy", "admin", PASSWORD)
    with pytest.raises(StaffError, match="at least 12"):
        store.add("dee", "Dee", "admin", "short")
    with pytest.raises(StaffError, match="unknown role"):
        store.add("dee", "Dee", "boss", PASSWORD)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/requests/abc?x=1", "/requests/abc?x=1"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x", "/"),
        ("", "/"),
    ],
)
def test_next_is_only_a_relative_path(target: str, expected: str) -> None:
    assert safe_next(target) == expected
