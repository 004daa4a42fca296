"""Times a peer signs: at most a few minutes ahead of our clock, not older than a
delayed message can be (or, for an answer, than what it answers), and a request
that expires within a sane lifetime. The limits are exact: at the limit is
accepted, one second past is refused, and the refusal names the field."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from rt_client.errors import InvalidInput
from rt_server.core.validate import (
    MAX_PEER_MESSAGE_AGE,
    MAX_REQUEST_LIFETIME,
    PEER_CLOCK_SKEW,
    check_peer_time,
    check_request_expiry,
    peer_time,
)

NOW = dt.datetime(2025, 9, 1, 8, 30, tzinfo=dt.UTC)
SECOND = dt.timedelta(seconds=1)
WHAT = "the decision's decided-at"


def _ts(value: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def test_the_constants_are_what_the_design_chose() -> None:
    assert PEER_CLOCK_SKEW == dt.timedelta(minutes=5)
    assert MAX_PEER_MESSAGE_AGE == dt.timedelta(days=30)
    assert MAX_REQUEST_LIFETIME == dt.timedelta(days=365)


@pytest.mark.parametrize(
    "value",
    [NOW, NOW + PEER_CLOCK_SKEW, NOW - MAX_PEER_MESSAGE_AGE, NOW - dt.timedelta(days=7)],
    ids=["now", "exactly the skew ahead", "exactly the maximum age", "a week late"],
)
def test_a_time_within_the_bounds_is_accepted(value: dt.datetime) -> None:
    check_peer_time(WHAT, value, NOW)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (NOW + PEER_CLOCK_SKEW + SECOND, "in the future"),
        (dt.datetime(9999, 12, 31, tzinfo=dt.UTC), "in the future"),
        (NOW - MAX_PEER_MESSAGE_AGE - SECOND, "more than 30 days in the past"),
        (dt.datetime(1971, 1, 1, tzinfo=dt.UTC), "more than 30 days in the past"),
    ],
    ids=["a second past the skew", "9999-12-31", "a second past the maximum age", "1971"],
)
def test_a_time_out_of_bounds_is_refused_naming_the_field(value: dt.datetime, problem: str) -> None:
    with pytest.raises(InvalidInput, match=f"^{WHAT} is {problem}"):
        check_peer_time(WHAT, value, NOW)


def test_an_answer_is_bounded_below_by_what_it_answers_not_by_the_age() -> None:
    request_created = NOW - dt.timedelta(days=90)  # a send retried long after
    check_peer_time(WHAT, request_created - PEER_CLOCK_SKEW, NOW, not_before=request_created)
    check_peer_time(WHAT, NOW - dt.timedelta(days=60), NOW, not_before=request_created)
    with pytest.raises(InvalidInput, match="before the time of what it answers"):
        check_peer_time(
            WHAT, request_created - PEER_CLOCK_SKEW - SECOND, NOW, not_before=request_created
        )
    with pytest.raises(InvalidInput, match="in the future"):
        check_peer_time(WHAT, NOW + PEER_CLOCK_SKEW + SECOND, NOW, not_before=request_created)


def test_peer_time_converts_and_checks() -> None:
    assert peer_time(WHAT, _ts(NOW - SECOND), NOW) == NOW - SECOND
    with pytest.raises(InvalidInput, match=f"^{WHAT} is missing"):
        peer_time(WHAT, Timestamp(), NOW)
    with pytest.raises(InvalidInput, match=f"^{WHAT} is out of range"):
        peer_time(WHAT, Timestamp(seconds=2**62), NOW)
    with pytest.raises(InvalidInput, match=f"^{WHAT} is in the future"):
        peer_time(WHAT, _ts(dt.datetime(9999, 12, 31, tzinfo=dt.UTC)), NOW)


def test_a_request_may_live_up_to_a_year() -> None:
    created = NOW - dt.timedelta(minutes=1)
    check_request_expiry(created, created + dt.timedelta(days=30), NOW)  # what we send
    check_request_expiry(created, created + MAX_REQUEST_LIFETIME, NOW)
    with pytest.raises(InvalidInput, match="more than 365 days after it was created"):
        check_request_expiry(created, created + MAX_REQUEST_LIFETIME + SECOND, NOW)
    with pytest.raises(InvalidInput, match="more than 365 days after it was created"):
        check_request_expiry(created, dt.datetime(9999, 12, 31, tzinfo=dt.UTC), NOW)


def test_an_expired_or_backwards_request_is_refused() -> None:
    created = NOW - dt.timedelta(days=29)
    check_request_expiry(created, NOW + SECOND, NOW)
    with pytest.raises(InvalidInput, match="has expired"):
        check_request_expiry(created, NOW, NOW)
    with pytest.raises(InvalidInput, match="expires before it was created"):
        check_request_expiry(NOW + SECOND, NOW + SECOND, NOW)
