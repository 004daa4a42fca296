"""The one claim check: a district named in a message is the district it must be.

DESIGN.md section 3, rule 4: a district a peer's message names as its author
(the signer, the requester, the sender, a request's other party) must be the
TLS peer itself, which the peer gate (``rt_server.rpc.auth``) has already
authorized; and a district a message names as its addressee must be us. Every
flow checks every such claim with ``require_claimed``, and nothing else.
"""

from __future__ import annotations

import hmac

from rt_client.errors import PeerAuthError

__all__ = ["require_claimed"]


def require_claimed(claimed: str | None, peer: str, what: str) -> None:
    """Check that ``claimed``, the district a message names as ``what``, is ``peer``.

    ``what`` is the subject of the reason, e.g. "the decision's prior district"
    (giving "the decision's prior district is not district 1964733").

    Compared in constant time; ``None`` (nothing named, e.g. a request we do
    not hold) is never the peer. Raises ``PeerAuthError`` (``PERMISSION_DENIED``
    to the peer, detail-free) whose text, for the log, says which claim failed
    (and never repeats what the peer claimed).
    """
    if claimed is None or not hmac.compare_digest(claimed.encode(), peer.encode()):
        # Never the claimed name itself in the log: it is the peer's, of any length and content.
        raise PeerAuthError(f"{what} is not district {peer}")
