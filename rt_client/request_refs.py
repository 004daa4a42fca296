"""Request ids as people type them: the whole id, or a unique prefix of at least 8 characters.

A request id is a 36-character UUID (``rt_client.ids``); tables show the
shortest prefix that names it alone in the district (``shortest_unique_prefix``,
never under ``MIN_PREFIX`` characters), and every command takes such a prefix
(``parse_request_ref``), which the district resolves against the requests it
holds. A prefix that names several requests is refused with their short ids.

``request_not_found`` is the one sentence for a request the district does not
hold, whatever the command. Like ``rt_client.ids``, no error repeats a value
that is not of the form of a request id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from rt_client.errors import InvalidInput, NotFound

__all__ = [
    "MIN_PREFIX",
    "is_full_request_id",
    "parse_request_ref",
    "request_not_found",
    "shortest_unique_prefix",
]

MIN_PREFIX: Final = 8
_SHAPE: Final = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"  # x: a lower-case hex digit
_HEX: Final = frozenset("0123456789abcdef")
_ELLIPSES: Final = ("…", "...")
EXAMPLE: Final = "354b6766"


def _has_shape(ref: str) -> bool:
    """Whether ``ref`` is the start of a canonical lower-case UUID."""
    if not 0 < len(ref) <= len(_SHAPE):
        return False
    return all((c == "-") if s == "-" else (c in _HEX) for c, s in zip(ref, _SHAPE, strict=False))


def is_full_request_id(ref: str) -> bool:
    """Whether ``ref`` is a whole request id (not a prefix)."""
    return len(ref) == len(_SHAPE) and _has_shape(ref)


def parse_request_ref(value: object) -> str:
    """``value`` as a request id or a prefix of one, lower-cased.

    Surrounding blanks and a trailing ellipsis (as a table may cut an id) are
    dropped; upper case is accepted. Raises ``InvalidInput``: empty, not the
    start of a request id, or shorter than ``MIN_PREFIX`` characters.
    """
    if not isinstance(value, str):
        raise InvalidInput("a request id must be text")
    ref = value.strip()
    for ellipsis in _ELLIPSES:
        ref = ref.removesuffix(ellipsis)
    ref = ref.strip().lower()
    if not ref:
        raise InvalidInput("a request id is needed ('rt requests' lists them)")
    if not _has_shape(ref):
        raise InvalidInput(
            "not a request id: request ids are 36 characters of hex digits and dashes, "
            f"e.g. {EXAMPLE}-0c1f-4a43-9d3e-8f1a2b3c4d5e; their first {MIN_PREFIX} or more "
            "characters will do, as 'rt requests' shows them"
        )
    if len(ref) < MIN_PREFIX:
        raise InvalidInput(
            f"request id {ref} is too short: give at least its first {MIN_PREFIX} "
            f"characters (e.g. {EXAMPLE}), as 'rt requests' shows them"
        )
    return ref


def request_not_found(value: object) -> NotFound:
    """The error for a request this district does not hold (the same in every command)."""
    shown = value.strip().lower() if isinstance(value, str) else ""
    name = f"request {shown}" if _has_shape(shown) else "request with this id"
    return NotFound(f"no {name} here ('rt requests' lists this district's requests)")


def shortest_unique_prefix(request_id: str, others: Iterable[str]) -> str:
    """The shortest prefix of ``request_id``, at least ``MIN_PREFIX`` long, that starts none
    of ``others`` (an id equal to it is ignored)."""
    length = MIN_PREFIX
    for other in others:
        if other == request_id:
            continue
        common = 0
        for a, b in zip(request_id, other, strict=False):
            if a != b:
                break
            common += 1
        length = max(length, common + 1)
    return request_id[: min(length, len(request_id))]
