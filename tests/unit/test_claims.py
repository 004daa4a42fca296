"""The one claim check (DESIGN.md section 3, rule 4): a district named in a message is the peer."""

from __future__ import annotations

import pytest

from rt_client.errors import PeerAuthError
from rt_server.flows.claims import require_claimed

PEER = "1964733"


def test_the_peer_itself_is_accepted() -> None:
    require_claimed(PEER, PEER, "the decision's prior district")


@pytest.mark.parametrize("claimed", ["1111111", "", "19647330", "1964733 ", None])
def test_any_other_district_or_none_is_refused_with_the_claim_named_not_repeated(
    claimed: str | None,
) -> None:
    with pytest.raises(PeerAuthError) as refused:
        require_claimed(claimed, PEER, "the decision's prior district")
    assert str(refused.value) == f"the decision's prior district is not district {PEER}"


def test_a_name_that_is_not_ascii_is_refused_not_an_error() -> None:
    with pytest.raises(PeerAuthError):
        require_claimed("19647\u00b33", PEER, "the signer")
