"""Argument types of ``rt``'s commands: a bad value is a usage error naming the argument.

Each is an argparse ``type``: it returns the value cleaned, or raises
``argparse.ArgumentTypeError`` with what the value must be, which argparse
prints as ``argument --limit: must be a whole number from 1 to 1000``.
The district checks everything again; these only make the common mistakes
clear before anything is sent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from typing import Final

from protos.rt.v1 import common_pb2
from rt_client.cli.session import TABLE_NAMES
from rt_client.errors import InvalidInput
from rt_client.request_refs import parse_request_ref

__all__ = [
    "MAX_LIMIT",
    "accepted_conflicts",
    "csv_file",
    "date",
    "limit",
    "request_ref",
    "request_status",
    "table_list",
]

MAX_LIMIT: Final = 1000  # the most rows a district lists at once
_MAX_INDEX: Final = 2**32 - 1
_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def limit(text: str) -> int:
    """How many rows to list: a whole number from 1 to ``MAX_LIMIT``."""
    value = text.strip()
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)


def request_ref(text: str) -> str:
    """A request id, or its first 8 or more characters (as tables show it)."""
    try:
        return parse_request_ref(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


STATUS_NAMES: Final = [
    n for n in common_pb2.RequestStatus.keys() if n != "REQUEST_STATUS_UNSPECIFIED"
]


def request_status(text: str) -> str:
    """A request status, in any case (``pending``, ``DATA_RECEIVED``)."""
    value = text.strip().upper().replace("-", "_")
    if value not in STATUS_NAMES:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(STATUS_NAMES)}")
    return value


def date(text: str) -> str:
    """A calendar date as YYYY-MM-DD."""
    value = text.strip()
    try:
        if _DATE_RE.fullmatch(value) is None:
            raise ValueError
        dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "must be a real date written YYYY-MM-DD, e.g. 2011-04-02"
        ) from None
    return value


def table_list(text: str) -> str:
    """Table codes, comma-separated (any case): e.g. ``HIS,ENR``."""
    names = [n for n in text.replace(" ", "").upper().split(",") if n]
    unknown = [n for n in names if n not in TABLE_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"takes table codes separated by commas, from {', '.join(TABLE_NAMES)}"
            + (f"; {unknown[0][:20]!r} is not one" if unknown else "")
        )
    return ",".join(names)


def accepted_conflicts(text: str) -> str:
    """``all``, or conflicting rows as TABLE:INDEX,... (as ``rt review --rows`` shows them)."""
    value = text.strip()
    if value.lower() == "all":
        return "all"
    items = [i for i in value.replace(" ", "").split(",") if i]
    for item in items:
        name, _, index = item.partition(":")
        if (
            name.upper() not in TABLE_NAMES
            or not (index.isascii() and index.isdigit())
            or int(index) > _MAX_INDEX
        ):
            raise argparse.ArgumentTypeError(
                "takes 'all' or rows as TABLE:INDEX separated by commas, as 'rt review "
                f"--rows' shows them (e.g. HIS:0,HIS:3); {item[:30]!r} is not one"
            )
    if not items:
        raise argparse.ArgumentTypeError("takes 'all' or rows as TABLE:INDEX, e.g. HIS:0")
    return ",".join(items)


def csv_file(text: str) -> str:
    """A CSV file's path: one that names something (what is in it is checked when read)."""
    value = text.strip()
    if not value:
        raise argparse.ArgumentTypeError("takes the path of a CSV file, e.g. students.csv")
    if len(value) > 4096:
        raise argparse.ArgumentTypeError("is not a file's path (longer than 4096 characters)")
    return value
