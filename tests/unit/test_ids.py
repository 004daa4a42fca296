"""Identifiers: district and school codes, request/transfer/message ids, and the SPIFFE URI."""

from __future__ import annotations

import uuid

import pytest

from rt_client.errors import InvalidInput
from rt_client.ids import (
    district_from_spiffe,
    district_of_school,
    is_uuid,
    parse_district_code,
    parse_message_id,
    parse_request_id,
    parse_school_code,
    parse_transfer_id,
    spiffe_id,
)


def test_district_code_is_exactly_seven_ascii_digits() -> None:
    assert parse_district_code("1964733") == "1964733"
    for bad in ["196473", "19647330", "196473a", " 1964733", "1964733\n", "", "١٩٦٤٧٣٣"]:
        with pytest.raises(InvalidInput, match="not a district code"):
            parse_district_code(bad)


def test_district_code_rejects_non_strings() -> None:
    with pytest.raises(InvalidInput):
        parse_district_code(1964733)  # type: ignore[arg-type]


def test_school_code_is_exactly_fourteen_digits() -> None:
    assert parse_school_code("19647331932334") == "19647331932334"
    for bad in ["1964733193233", "196473319323345", "1964733193233x", ""]:
        with pytest.raises(InvalidInput, match="not a school code"):
            parse_school_code(bad)


def test_district_of_school_is_its_first_seven_digits() -> None:
    assert district_of_school(parse_school_code("19647331932334")) == "1964733"
    with pytest.raises(InvalidInput):
        district_of_school("123")  # type: ignore[arg-type]


def test_spiffe_id_round_trips() -> None:
    code = parse_district_code("1964733")
    uri = spiffe_id(code)
    assert uri == "spiffe://records-transfer/district/1964733"
    assert district_from_spiffe(uri) == code


def test_spiffe_id_refuses_a_malformed_code() -> None:
    with pytest.raises(InvalidInput):
        spiffe_id("19647")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://records-transfer/district/196473",
        "spiffe://records-transfer/district/19647331",
        "spiffe://records-transfer/district/1964733/x",
        "spiffe://records-transfer/district/1964733?x=1",
        "spiffe://records-transfer/district/1964733#f",
        "spiffe://other-trust-domain/district/1964733",
        "spiffe://records-transfer/registry",
        "SPIFFE://records-transfer/district/1964733",
        "spiffe://user@records-transfer/district/1964733",
        "spiffe://records-transfer:443/district/1964733",
        "https://records-transfer/district/1964733",
        "",
    ],
)
def test_district_from_spiffe_refuses_anything_else(uri: str) -> None:
    with pytest.raises(InvalidInput):
        district_from_spiffe(uri)


def test_request_transfer_and_message_ids_are_lower_case_uuids() -> None:
    value = str(uuid.uuid4())
    assert is_uuid(value)
    assert parse_request_id(value) == value
    assert parse_transfer_id(value) == value
    assert parse_message_id(value, "decision id") == value


SOME_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "x",
        SOME_UUID.upper(),
        "{" + SOME_UUID + "}",
        SOME_UUID.replace("-", ""),
        SOME_UUID + "\n",
        SOME_UUID + "0",
        "'; DROP TABLE requests;--",
        "t" * (3 * 1024 * 1024),
        None,
        12,
    ],
    ids=lambda v: repr(v)[:20],
)
def test_anything_else_is_refused_without_echoing_it(bad: object) -> None:
    assert not is_uuid(bad)
    for parse, what in [
        (parse_request_id, "request id"),
        (parse_transfer_id, "transfer id"),
        (lambda v: parse_message_id(v, "import notice id"), "import notice id"),
    ]:
        with pytest.raises(InvalidInput) as info:
            parse(bad)
        assert str(info.value) == f"{what} must be a lower-case UUID"


def test_code_errors_do_not_echo_the_value() -> None:
    for parse, bad in [(parse_district_code, "9" * 5000), (parse_school_code, "NOTACODE")]:
        with pytest.raises(InvalidInput) as info:
            parse(bad)
        assert bad[:8] not in str(info.value)
