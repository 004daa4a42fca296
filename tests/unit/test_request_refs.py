"""Request ids as registrars type them (``rt_client.request_refs``): prefixes and short ids."""

from __future__ import annotations

import pytest

from rt_client.errors import InvalidInput, NotFound
from rt_client.request_refs import (
    is_full_request_id,
    parse_request_ref,
    request_not_found,
    shortest_unique_prefix,
)

FULL = "354b6766-0c1f-4a43-9d3e-8f1a2b3c4d5e"


@pytest.mark.parametrize(
    ("typed", "ref"),
    [
        (FULL, FULL),
        ("354b6766", "354b6766"),
        (" 354B6766-0C ", "354b6766-0c"),
        ("354b6766…", "354b6766"),
        ("354b6766-0c1f...", "354b6766-0c1f"),
    ],
)
def test_prefixes_are_cleaned(typed: str, ref: str) -> None:
    assert parse_request_ref(typed) == ref
    assert is_full_request_id(ref) == (ref == FULL)


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "a request id is needed"),
        ("354b676", "too short: give at least its first 8 characters"),
        ("354b6766x", "not a request id"),
        ("354b-6766", "not a request id"),
        (FULL + "0", "not a request id"),
        ("x" * 10_000, "not a request id"),
        (5, "must be text"),
    ],
)
def test_bad_refs_are_refused_without_echoing_them(typed: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        parse_request_ref(typed)
    assert "xxxxxxxxxx" not in str(info.value)


def test_one_sentence_for_a_missing_request() -> None:
    assert isinstance(request_not_found(FULL), NotFound)
    assert str(request_not_found("354b6766")) == (
        "no request 354b6766 here ('rt requests' lists this district's requests)"
    )
    assert "request with this id" in str(request_not_found("<script>" * 1000))


@pytest.mark.parametrize(
    ("others", "short"),
    [
        ([], "354b6766"),
        (["9e1d0a33-5f2b-4c7d-a1e4-0b9c8d7e6f50", FULL], "354b6766"),
        (["354b6766-1111-4a43-9d3e-8f1a2b3c4d5e"], "354b6766-0"),
        (["354b6766-0c2f-4a43-9d3e-8f1a2b3c4d5e"], "354b6766-0c1"),
        (["354b67ff-0c1f-4a43-9d3e-8f1a2b3c4d5e"], "354b6766"),
    ],
)
def test_shortest_unique_prefix(others: list[str], short: str) -> None:
    assert shortest_unique_prefix(FULL, others) == short
