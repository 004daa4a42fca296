"""The ``[mail]`` table of ``district.toml``: where the district's notices are sent, and how.

Notices (a new inbound request, records arrived, a request rejected, due-date
reminders, overdue and missing-child alerts, a daily digest) are queued in the
district database and sent by ``rt serve`` over SMTP with STARTTLS (RFC 3207),
the server's certificate verified against ``ca_file`` (or the system's CAs).

```toml
[mail]
host = "smtp.district.example"
port = 587
from_address = "records-transfer@district.example"
records_administrator = "records-admin@district.example"
username = "rt"
password_file = "smtp-password"          # or password_env = "RT_SMTP_PASSWORD"
ca_file = "smtp-ca.pem"                  # default: the system's CAs
digest = false

[mail.schools]                           # each school's incoming-request list
"19647331932334" = ["registrar@lincoln.example"]

[mail.staff]                             # who asked (--as NAME) -> their address
"jdoe" = "jdoe@district.example"
```

The EC 49068.6 missing-child alert goes to ``law_enforcement_contact`` (a
top-level key: the alert is recorded whether or not mail is set up).

Every problem is a ``ConfigError`` naming the key; an address with a line
break (header injection) or without a domain is refused.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rt_client.errors import ConfigError

__all__ = ["MailConfig", "mail_config_from_table", "mail_config_to_table"]

# Deliberately plain: local@domain.tld, no spaces, no line breaks, no brackets.
_ADDRESS: Final = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_CDS: Final = re.compile(r"[0-9]{14}")
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class MailConfig:
    """SMTP settings and the district's notice recipients. Raises ``ConfigError`` on bad values."""

    host: str
    from_address: str
    records_administrator: str
    port: int = 587
    # STARTTLS is required; false is accepted only for a relay on this machine.
    starttls: bool = True
    ca_file: Path | None = None
    username: str = ""
    password_file: Path | None = None
    password_env: str = ""
    schools: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    staff: Mapping[str, str] = field(default_factory=dict)
    digest: bool = False
    digest_hour: int = 7  # local time (timezone) at which the daily digest goes
    timezone: str = "America/Los_Angeles"
    # Linked from each notice when set, e.g. the console's address.
    console_url: str = ""
    # A notice that could not be sent is tried again after a delay doubling
    # from retry_base_seconds up to retry_max_seconds; one still unsent
    # give_up_hours after it was queued is marked FAILED (and logged).
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 1800.0
    give_up_hours: float = 7 * 24.0
    timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host or any(c in self.host for c in " \r\n"):
            raise ConfigError("mail.host: must be the SMTP server's host name")
        if not isinstance(self.port, int) or isinstance(self.port, bool):
            raise ConfigError("mail.port: must be a whole number")
        if not 0 < self.port < 65536:
            raise ConfigError("mail.port: must be from 1 to 65535")
        if not isinstance(self.starttls, bool):
            raise ConfigError("mail.starttls: must be true or false")
        if not self.starttls and self.host not in _LOOPBACK:
            raise ConfigError(
                "mail.starttls: may be false only for a relay on this machine (localhost); "
                "notices must not cross the network unencrypted"
            )
        _check_address("mail.from_address", self.from_address)
        _check_address("mail.records_administrator", self.records_administrator)
        if self.password_file is not None and self.password_env:
            raise ConfigError("mail: give password_file or password_env, not both")
        if (self.password_file is not None or self.password_env) and not self.username:
            raise ConfigError("mail.username: needed with a password")
        schools: dict[str, tuple[str, ...]] = {}
        for cds, addresses in dict(self.schools).items():
            if not isinstance(cds, str) or not _CDS.fullmatch(cds):
                raise ConfigError(f"mail.schools: {cds!r} is not a 14-digit CDS code")
            if isinstance(addresses, str):
                addresses = (addresses,)
            listed = tuple(addresses)
            for address in listed:
                _check_address(f"mail.schools.{cds}", address)
            schools[cds] = listed
        object.__setattr__(self, "schools", schools)
        staff = dict(self.staff)
        for name, address in staff.items():
            _check_address(f"mail.staff.{name}", address)
        object.__setattr__(self, "staff", staff)
        if not isinstance(self.digest, bool):
            raise ConfigError("mail.digest: must be true or false")
        if not isinstance(self.digest_hour, int) or not 0 <= self.digest_hour <= 23:
            raise ConfigError("mail.digest_hour: must be an hour from 0 to 23")
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(self.timezone)
        except Exception as exc:
            raise ConfigError(f"mail.timezone: {self.timezone!r} is not a known time zone") from exc
        if self.console_url and not self.console_url.startswith(("https://", "http://")):
            raise ConfigError("mail.console_url: must start with https://")
        for name in ("retry_base_seconds", "retry_max_seconds", "give_up_hours", "timeout_seconds"):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigError(f"mail.{name}: must be a positive number")
            object.__setattr__(self, name, float(value))

    def password(self) -> str | None:
        """The SMTP password, read now from its file or environment variable (never stored).

        Raises ``ConfigError`` when the file cannot be read or the variable is unset.
        """
        import os

        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"mail.password_file: cannot read {self.password_file}: {exc.strerror or exc}"
                ) from exc
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"mail.password_env: ${self.password_env} is not set")
            return value
        return None


def _check_address(key: str, value: object) -> None:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ConfigError(f"{key}: {value!r} is not an e-mail address (name@domain.example)")


_PATHS: Final = ("ca_file", "password_file")


def mail_config_from_table(table: object, base: Path, where: str) -> MailConfig:
    """The ``[mail]`` TOML table as a ``MailConfig``; paths resolved against ``base``."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table ([mail])")
    fields = {f.name for f in dataclasses.fields(MailConfig)}
    unknown = sorted(set(table) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    values: dict[str, Any] = dict(table)
    for name in _PATHS:
        if name in values:
            if not isinstance(values[name], str) or not values[name]:
                raise ConfigError(f"{where}.{name} must be a path")
            values[name] = base / Path(values[name]).expanduser()
    for name in ("schools", "staff"):
        if name in values and not isinstance(values[name], dict):
            raise ConfigError(f"{where}.{name} must be a table")
    missing = sorted({"host", "from_address", "records_administrator"} - set(values))
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
    try:
        return MailConfig(**values)
    except ConfigError as exc:  # already names the key (mail.KEY)
        raise ConfigError(f"{where.removesuffix('mail')}{exc}") from exc


def mail_config_to_table(mail: MailConfig, relative: Any) -> dict[str, Any]:
    """``mail`` as a TOML table (``relative``: how a path is written)."""
    table: dict[str, Any] = {}
    for f in dataclasses.fields(mail):
        value = getattr(mail, f.name)
        if value is None:
            continue
        if isinstance(value, Path):
            value = relative(value)
        elif f.name == "schools":
            value = {k: list(v) for k, v in value.items()}
        elif f.name == "staff":
            value = dict(value)
        table[f.name] = value
    return table
