"""Staff accounts of the console: role, Argon2id password, TOTP secret, lockout, what was read.

The accounts live in one SQLite file beside the district's data (``console.db``
in ``data_dir``, mode 0600), written by ``rt staff`` and read by ``rt console``.
They are the console's, not the district server's: the Registrar socket
already trusts whoever can open it (the console, the CLI); a staff account
says which person the console acts for, and that person's name is the
``actor`` of every Registrar call it makes (the audit trail, the disclosure log).

Lockout (NIST SP 800-63B 5.2.2, rate limiting): after ``FREE_FAILURES`` wrong
logins in a row an account is refused, right password or not, for a delay
that doubles with each further failure (30 s, 60 s, ... up to 15 minutes);
a successful login clears it, as does ``rt staff reset``.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from rt_client.console import totp
from rt_client.errors import RecordsTransferError

__all__ = [
    "ROLES",
    "LoginRefused",
    "StaffAccount",
    "StaffError",
    "StaffStore",
    "staff_db_path",
]

ROLES: Final = ("requester", "responder", "admin")
FREE_FAILURES: Final = 5
BASE_LOCK_SECONDS: Final = 30
MAX_LOCK_SECONDS: Final = 900
MIN_PASSWORD: Final = 12
USERNAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")

Clock = Callable[[], float]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS staff (
    username TEXT PRIMARY KEY,
    full_name TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    totp_secret TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0,
    last_step INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_messages (
    username TEXT NOT NULL,
    request_id TEXT NOT NULL,
    seen INTEGER NOT NULL,
    PRIMARY KEY (username, request_id)
);
"""


class StaffError(RecordsTransferError):
    """A staff command that cannot be done as asked (the message says why and what to do)."""


class LoginRefused(RecordsTransferError):
    """A login refused; the message is safe to show (it never says which part was wrong)."""


@dataclass(frozen=True)
class StaffAccount:
    username: str
    full_name: str
    role: str
    disabled: bool
    locked_until: float


def staff_db_path(data_dir: Path) -> Path:
    return data_dir / "console.db"


class StaffStore:
    """The console's accounts in ``path`` (created on first use, mode 0600)."""

    def __init__(
        self, path: Path, clock: Clock = time.time, hasher: PasswordHasher | None = None
    ) -> None:
        """``hasher``: Argon2id at argon2-cffi's default cost (RFC 9106's second recommended
        option) unless given (tests give a cheap one, the real code path)."""
        self.path = path
        self.clock = clock
        self._hasher = hasher or PasswordHasher()
        self._dummy = self._hasher.hash("not-a-password-of-anyone")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:
                yield db
        finally:
            db.close()

    # --- rt staff -------------------------------------------------------------------------

    def add(self, username: str, full_name: str, role: str, password: str) -> str:
        """Create an account; returns its TOTP secret. Raises ``StaffError``."""
        _check_username(username)
        _check_role(role)
        _check_password(password)
        secret = totp.new_secret()
        with self._db() as db:
            try:
                db.execute(
                    "INSERT INTO staff (username, full_name, role, password_hash, totp_secret,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (username, full_name, role, self._hasher.hash(password), secret, self.clock()),
                )
            except sqlite3.IntegrityError as exc:
                raise StaffError(
                    f"there is already a staff account {username!r}: "
                    "use 'rt staff reset' to give it a new password"
                ) from exc
        return secret

    def list(self) -> list[StaffAccount]:
        with self._db() as db:
            rows = db.execute(
                "SELECT username, full_name, role, disabled, locked_until FROM staff"
                " ORDER BY username"
            ).fetchall()
        return [StaffAccount(r[0], r[1], r[2], bool(r[3]), float(r[4])) for r in rows]

    def get(self, username: str) -> StaffAccount | None:
        return next((a for a in self.list() if a.username == username), None)

    def disable(self, username: str) -> None:
        self._update(username, "UPDATE staff SET disabled = 1 WHERE username = ?", (username,))

    def reset(self, username: str, password: str) -> str:
        """A new password and TOTP secret; enables and unlocks the account. Returns the secret."""
        _check_password(password)
        secret = totp.new_secret()
        self._update(
            username,
            "UPDATE staff SET password_hash = ?, totp_secret = ?, disabled = 0, failed = 0,"
            " locked_until = 0, last_step = 0 WHERE username = ?",
            (self._hasher.hash(password), secret, username),
        )
        return secret

    def _update(self, username: str, sql: str, params: tuple[object, ...]) -> None:
        with self._db() as db:
            if db.execute(sql, params).rowcount != 1:
                raise StaffError(f"no staff account {username!r} (see 'rt staff list')")

    # --- logging in -----------------------------------------------------------------------

    def authenticate(self, username: str, password: str, code: str) -> StaffAccount:
        """The account, if the password and the TOTP code are right and it may log in.

        Raises ``LoginRefused`` (one message for a wrong name, password or code).
        """
        now = self.clock()
        with self._db() as db:
            row = db.execute(
                "SELECT password_hash, totp_secret, role, disabled, failed, locked_until,"
                " last_step, full_name FROM staff WHERE username = ?",
                (username,),
            ).fetchone()
            if row is None:
                self._verify(self._dummy, password)  # the same time as for a real account
                raise LoginRefused(_WRONG)
            pw_hash, secret, role, disabled, failed, locked_until, last_step, name = row
            if locked_until > now:
                wait = math.ceil(locked_until - now)
                raise LoginRefused(
                    f"too many failed logins: this account is locked for {wait} more seconds"
                )
            password_ok = self._verify(pw_hash, password)
            step = totp.matching_step(secret, code, now, last_step)
            if not password_ok or step is None:
                failed += 1
                lock = 0.0
                if failed >= FREE_FAILURES:
                    delay = BASE_LOCK_SECONDS * 2 ** (failed - FREE_FAILURES)
                    lock = now + min(MAX_LOCK_SECONDS, delay)
                # Written before refusing: the refusal must not roll the count back.
                db.execute(
                    "UPDATE staff SET failed = ?, locked_until = ? WHERE username = ?",
                    (failed, lock, username),
                )
                db.commit()
                raise LoginRefused(_WRONG)
            if disabled:
                raise LoginRefused("this account is disabled: ask your console administrator")
            db.execute(
                "UPDATE staff SET failed = 0, locked_until = 0, last_step = ? WHERE username = ?",
                (step, username),
            )
        return StaffAccount(username, name, role, False, 0.0)

    def _verify(self, pw_hash: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(pw_hash, password))
        except (VerificationError, InvalidHashError):
            return False

    # --- unread messages ------------------------------------------------------------------

    def seen(self, username: str) -> dict[str, int]:
        """How many messages of each request's thread this person has seen."""
        with self._db() as db:
            rows = db.execute(
                "SELECT request_id, seen FROM seen_messages WHERE username = ?", (username,)
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def mark_seen(self, username: str, request_id: str, count: int) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO seen_messages (username, request_id, seen) VALUES (?, ?, ?)"
                " ON CONFLICT (username, request_id) DO UPDATE SET seen = excluded.seen",
                (username, request_id, count),
            )


_WRONG: Final = "wrong user name, password or code (check the code in your authenticator app)"


def _check_username(username: str) -> None:
    if not (1 <= len(username) <= 64) or not set(username) <= USERNAME_CHARS:
        raise StaffError("a user name is 1 to 64 lower-case letters, digits, '.', '_' or '-'")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise StaffError(f"unknown role {role!r}: one of {', '.join(ROLES)}")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise StaffError(f"a password needs at least {MIN_PASSWORD} characters")
