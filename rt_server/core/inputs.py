"""The small checks of what a registrar or a peer hands the district: data in, ``InvalidInput`` out.

Each function takes a value as it arrived (a proto field, a form field, a CLI
argument: perhaps empty, perhaps not even text) and returns it cleaned, or
raises ``InvalidInput`` with a message written for a registrar. Error messages
name the field, never its value. Column widths are the store's business: the
caller passes them (``rt_server.store.schema``'s ``NAME_LEN``, ``STAFF_LEN``...).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from protos.rt.v1 import common_pb2
from rt_client.errors import InvalidInput
from rt_server.core.tables import Unconvertible, parse_date

__all__ = [
    "MAX_LIST_LIMIT",
    "list_limit",
    "parse_actor",
    "parse_birth_date",
    "parse_gender",
    "parse_local_id",
    "parse_reject_reason",
    "parse_ssid",
    "parse_text",
    "parse_timestamp",
]

MAX_LIST_LIMIT: Final = 1000

_SSID_RE: Final = re.compile(r"[0-9]{10}")
_LOCAL_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}")
_GENDERS: Final = frozenset({"M", "F", "X"})


def parse_text(value: object, what: str, max_len: int, *, required: bool = False) -> str | None:
    """``value`` stripped; ``None`` if empty and not required.

    Raises ``InvalidInput`` (not text, required but empty, longer than
    ``max_len``, or holding a NUL character).
    """
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    value = (value or "").strip()
    if not value:
        if required:
            raise InvalidInput(f"{what} is required")
        return None
    if len(value) > max_len:
        raise InvalidInput(f"{what} is longer than {max_len} characters")
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character")
    return value


def parse_actor(value: object, max_len: int) -> str:
    """The staff member (or "district NNNNNNN") acting. Raises ``InvalidInput`` if missing."""
    actor = parse_text(value, "the acting staff member (actor)", max_len, required=True)
    assert actor is not None
    return actor


def parse_ssid(value: object) -> str | None:
    """The 10-digit statewide student identifier, or ``None`` if empty. Raises ``InvalidInput``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or _SSID_RE.fullmatch(value) is None:
        raise InvalidInput("SSID must be the 10-digit statewide student identifier")
    return value


def parse_local_id(value: object, max_len: int) -> str | None:
    """A district's own student id (letters, digits, '-', '_'), or ``None`` if empty.

    Raises ``InvalidInput``.
    """
    local_id = parse_text(value, "local id", max_len)
    if local_id is not None and _LOCAL_ID_RE.fullmatch(local_id) is None:
        raise InvalidInput("local id may hold only letters, digits, '-' and '_'")
    return local_id


def parse_gender(value: object) -> str | None:
    """ "M", "F" or "X" (any case given), or ``None`` if empty. Raises ``InvalidInput``."""
    if value is not None and not isinstance(value, str):
        raise InvalidInput("gender must be text")
    gender = (value or "").strip().upper()
    if not gender:
        return None
    if gender not in _GENDERS:
        raise InvalidInput("gender must be one letter: M (male), F (female) or X (nonbinary)")
    return gender


def parse_birth_date(value: object, *, required: bool) -> dt.date | None:
    """A plausible birth date (a ``date`` or "YYYY-MM-DD"), or ``None`` if empty and optional.

    Raises ``InvalidInput``.
    """
    if value is None or value == "":
        if required:
            raise InvalidInput("birth date is required")
        return None
    if isinstance(value, str):
        try:
            value = parse_date(value)
        except Unconvertible as exc:
            raise InvalidInput(f"birth date: {exc}") from None
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise InvalidInput("birth date must be a date")
    earliest, today = dt.date(1900, 1, 1), dt.date.today()
    if not earliest <= value <= today:
        raise InvalidInput(
            f"birth date must be between {earliest.isoformat()} and today ({today.isoformat()})"
        )
    return value


def parse_timestamp(ts: Timestamp, what: str) -> dt.datetime:
    """A protobuf ``Timestamp`` as aware UTC. Raises ``InvalidInput`` when out of range."""
    try:
        return ts.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(f"{what} is out of range") from None


def list_limit(limit: int, default: int) -> int:
    """How many rows a listing returns: ``default`` when unset, never over ``MAX_LIST_LIMIT``."""
    # The proto's uint32 limit is 0 when unset.
    return default if limit <= 0 else min(limit, MAX_LIST_LIMIT)


def parse_reject_reason(reason: str | int | None) -> str:
    """The ``RejectReason`` name for ``reason`` (a name or a value).

    Raises ``InvalidInput`` if it is missing, unknown or unspecified.
    """
    try:
        name = (
            common_pb2.RejectReason.Name(common_pb2.RejectReason.ValueType(reason))
            if isinstance(reason, int)
            else reason
        )
        if name is None:
            raise ValueError
        common_pb2.RejectReason.Value(name)
    except ValueError:
        raise InvalidInput("a rejection needs a reason code") from None
    if name == "REJECT_REASON_UNSPECIFIED":
        raise InvalidInput("a rejection needs a reason code")
    return name
