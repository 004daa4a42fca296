"""Identifiers of the domain, and the one place that parses them.

District codes are California's 7-digit county-district codes; school codes are
the 14-digit CDS codes whose first 7 digits are the district's (DESIGN.md
section 3). A district's TLS identity is the SPIFFE-style URI
``spiffe://records-transfer/district/<code>`` carried as the certificate's only
URI SAN. Request, transfer and message ids (decisions, thread messages, import
notices) are lower-case canonical UUIDs, as ``str(uuid.uuid4())`` writes them.

An id from outside is parsed here before it is used in any way (a query, a
log line, an error): errors say what was wrong, never the value, which may be
megabytes long or made to forge a log line.
"""

from __future__ import annotations

import re
from typing import Final, NewType

from rt_client.errors import InvalidInput

__all__ = [
    "SPIFFE_DISTRICT_PREFIX",
    "DistrictCode",
    "MessageId",
    "RequestId",
    "SchoolCode",
    "TransferId",
    "district_from_spiffe",
    "district_of_school",
    "is_uuid",
    "parse_district_code",
    "parse_message_id",
    "parse_request_id",
    "parse_school_code",
    "parse_transfer_id",
    "parse_uuid",
    "spiffe_id",
]

DistrictCode = NewType("DistrictCode", str)
SchoolCode = NewType("SchoolCode", str)
RequestId = NewType("RequestId", str)
TransferId = NewType("TransferId", str)
MessageId = NewType("MessageId", str)  # a decision's, thread message's or import notice's

SPIFFE_DISTRICT_PREFIX: Final = "spiffe://records-transfer/district/"

# ASCII digits only: ``str.isdigit`` and ``\d`` also accept other scripts' digits
# (e.g. Arabic-Indic), which would give one district several spellings.
_DISTRICT_RE: Final = re.compile(r"[0-9]{7}")
_SCHOOL_RE: Final = re.compile(r"[0-9]{14}")
_UUID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_district_code(value: str) -> DistrictCode:
    """``value`` as a district code. Raises ``InvalidInput`` unless it is exactly 7 digits."""
    if not isinstance(value, str) or _DISTRICT_RE.fullmatch(value) is None:
        raise InvalidInput(
            "not a district code: expected the 7-digit county-district "
            "code (the first 7 digits of a CDS code), e.g. 1964733"
        )
    return DistrictCode(value)


def parse_school_code(value: str) -> SchoolCode:
    """``value`` as a CDS school code. Raises ``InvalidInput`` unless it is exactly 14 digits."""
    if not isinstance(value, str) or _SCHOOL_RE.fullmatch(value) is None:
        raise InvalidInput("not a school code: expected the 14-digit CDS code, e.g. 19647331932334")
    return SchoolCode(value)


def is_uuid(value: object) -> bool:
    """Whether ``value`` is a lower-case canonical UUID (36 characters)."""
    return isinstance(value, str) and _UUID_RE.fullmatch(value) is not None


def parse_uuid(value: object, what: str) -> str:
    """``value`` as a lower-case canonical UUID.

    Raises ``InvalidInput`` naming ``what`` (e.g. "request id"), not the value.
    """
    if not is_uuid(value):
        raise InvalidInput(f"{what} must be a lower-case UUID")
    assert isinstance(value, str)
    return value


def parse_request_id(value: object) -> RequestId:
    """``value`` as a request id. Raises ``InvalidInput`` unless it is a lower-case UUID."""
    return RequestId(parse_uuid(value, "request id"))


def parse_transfer_id(value: object) -> TransferId:
    """``value`` as a transfer id. Raises ``InvalidInput`` unless it is a lower-case UUID."""
    return TransferId(parse_uuid(value, "transfer id"))


def parse_message_id(value: object, what: str = "message id") -> MessageId:
    """``value`` as the id of a decision, thread message or import notice.

    Raises ``InvalidInput`` naming ``what`` unless it is a lower-case UUID.
    """
    return MessageId(parse_uuid(value, what))


def district_of_school(school: SchoolCode) -> DistrictCode:
    """The district a school belongs to: the first 7 digits of its CDS code."""
    return DistrictCode(parse_school_code(school)[:7])


def spiffe_id(code: DistrictCode) -> str:
    """The URI SAN that names ``code`` in a district certificate."""
    return SPIFFE_DISTRICT_PREFIX + parse_district_code(code)


def district_from_spiffe(uri: str) -> DistrictCode:
    """The district named by a certificate's URI SAN.

    Raises ``InvalidInput`` for anything but exactly
    ``spiffe://records-transfer/district/<7 digits>`` (no path suffix, query,
    fragment, user info, port or case variant).
    """
    if not isinstance(uri, str) or not uri.startswith(SPIFFE_DISTRICT_PREFIX):
        raise InvalidInput("not a Records Transfer district identity")
    code = uri[len(SPIFFE_DISTRICT_PREFIX) :]
    if _DISTRICT_RE.fullmatch(code) is None:
        raise InvalidInput("not a Records Transfer district identity")
    return DistrictCode(code)
