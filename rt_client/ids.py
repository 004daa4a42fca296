"""Identifiers of the domain, and the one place that parses them.

District codes are California's 7-digit county-district codes; school codes are
the 14-digit CDS codes whose first 7 digits are the district's (DESIGN.md
section 3). A district's TLS identity is the SPIFFE-style URI
``spiffe://records-transfer/district/<code>`` carried as the certificate's only
URI SAN.
"""

from __future__ import annotations

import re
from typing import Final, NewType

from rt_client.errors import InvalidInput

__all__ = [
    "SPIFFE_DISTRICT_PREFIX",
    "DistrictCode",
    "RequestId",
    "SchoolCode",
    "TransferId",
    "district_from_spiffe",
    "district_of_school",
    "parse_district_code",
    "parse_school_code",
    "spiffe_id",
]

DistrictCode = NewType("DistrictCode", str)
SchoolCode = NewType("SchoolCode", str)
RequestId = NewType("RequestId", str)
TransferId = NewType("TransferId", str)

SPIFFE_DISTRICT_PREFIX: Final = "spiffe://records-transfer/district/"

# ASCII digits only: ``str.isdigit`` and ``\d`` also accept other scripts' digits
# (e.g. Arabic-Indic), which would give one district several spellings.
_DISTRICT_RE: Final = re.compile(r"[0-9]{7}")
_SCHOOL_RE: Final = re.compile(r"[0-9]{14}")


def parse_district_code(value: str) -> DistrictCode:
    """``value`` as a district code. Raises ``InvalidInput`` unless it is exactly 7 digits."""
    if not isinstance(value, str) or _DISTRICT_RE.fullmatch(value) is None:
        raise InvalidInput(
            f"{_shown(value)} is not a district code: expected the 7-digit county-district "
            "code (the first 7 digits of a CDS code), e.g. 1964733"
        )
    return DistrictCode(value)


def parse_school_code(value: str) -> SchoolCode:
    """``value`` as a CDS school code. Raises ``InvalidInput`` unless it is exactly 14 digits."""
    if not isinstance(value, str) or _SCHOOL_RE.fullmatch(value) is None:
        raise InvalidInput(
            f"{_shown(value)} is not a school code: expected the 14-digit CDS code, "
            "e.g. 19647331932334"
        )
    return SchoolCode(value)


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


def _shown(value: object) -> str:
    """A short, printable rendering of a rejected value for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
