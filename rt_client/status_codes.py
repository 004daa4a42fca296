"""The one table between the project's exceptions and gRPC status codes, both directions.

At a server (a district's peer and registrar services, the registry), a domain
error becomes a status code by ``status_for``: the first row of ``CODES`` whose
exception class matches. At a client (calls to another district, to the
registry, an enrollment), a status code becomes a domain error by
``error_from_rpc``: ``ALREADY_EXISTS`` is ``Duplicate`` (already delivered),
a code in ``RETRYABLE`` is ``PeerUnavailable`` (the same call may succeed
later), and every other code is a refusal of the kind the caller names in its
``Remote`` (``TransferError`` from a district, ``RegistryError`` from the
registry), with the refinements the caller asks for (``DirectoryError`` for an
unregistered district, ``EnrollmentRefused`` for a refused enrollment).

What the *text* of a status says is each server's policy, not this table's:
toward a peer it is detail-free (``PEER_TEXT``: nothing the peer could learn
from), toward a registrar it is the error's diagnostics.

One refusal is retryable *soon*: a server that is up but cannot take the call
yet (a district that cannot verify its caller while its registry is down)
answers UNAVAILABLE with the fixed text ``NOT_VERIFIABLE_YET`` and the
trailing metadata ``retry-after: <seconds>`` (``retry_soon_metadata``). A
client reads it as ``RetrySoon`` with that delay, bounded to
``RETRY_AFTER_BOUNDS``, rather than as a district that is down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import grpc

from rt_client import errors
from rt_client.callgate import BUSY, NOT_AUTHORIZED

__all__ = [
    "CODES",
    "NOT_VERIFIABLE_YET",
    "PEER_TEXT",
    "RETRYABLE",
    "RETRY_AFTER",
    "RETRY_AFTER_BOUNDS",
    "Remote",
    "error_from_rpc",
    "peer_text",
    "retry_after_of",
    "retry_soon_metadata",
    "status_for",
]

StatusCode = grpc.StatusCode

# Exception -> status code, at servers. Ordered: a subclass before its parent.
CODES: Final[tuple[tuple[type[errors.RecordsTransferError], grpc.StatusCode], ...]] = (
    (errors.EnrollmentRefused, StatusCode.UNAUTHENTICATED),  # before its parent RegistryError
    (errors.CallerNotAuthenticated, StatusCode.UNAUTHENTICATED),  # before PeerAuthError
    (errors.PeerAuthError, StatusCode.PERMISSION_DENIED),
    (errors.Duplicate, StatusCode.ALREADY_EXISTS),  # before its parent InvalidInput
    (errors.IntegrityError, StatusCode.INVALID_ARGUMENT),
    (errors.InvalidInput, StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, StatusCode.NOT_FOUND),
    (errors.Conflict, StatusCode.ABORTED),  # before its parent TransferError
    (errors.WrongStatus, StatusCode.FAILED_PRECONDITION),
    (errors.ImportConflict, StatusCode.FAILED_PRECONDITION),
    (errors.PeerUnavailable, StatusCode.UNAVAILABLE),
    (errors.Overloaded, StatusCode.RESOURCE_EXHAUSTED),
    (errors.DirectoryError, StatusCode.FAILED_PRECONDITION),
    (errors.RegistryError, StatusCode.UNAVAILABLE),
    (errors.ConfigError, StatusCode.FAILED_PRECONDITION),
    (errors.TransferError, StatusCode.FAILED_PRECONDITION),
)

# Status code -> exception, at clients: the codes after which the same call may
# well succeed later (``PeerUnavailable``). INTERNAL and UNKNOWN are here too: a
# server's bug or a proxy's hiccup is not a refusal of this request for good.
RETRYABLE: Final = frozenset(
    {
        StatusCode.UNAVAILABLE,
        StatusCode.DEADLINE_EXCEEDED,
        StatusCode.RESOURCE_EXHAUSTED,
        StatusCode.ABORTED,
        StatusCode.INTERNAL,
        StatusCode.UNKNOWN,
        StatusCode.CANCELLED,
    }
)

# What a peer sees of a refusal: the code, and nothing it could learn from.
PEER_TEXT: Final[dict[grpc.StatusCode, str]] = {
    StatusCode.UNAUTHENTICATED: NOT_AUTHORIZED,
    StatusCode.PERMISSION_DENIED: NOT_AUTHORIZED,
    StatusCode.INVALID_ARGUMENT: "refused",
    StatusCode.NOT_FOUND: "refused",
    StatusCode.ALREADY_EXISTS: "already received",
    StatusCode.FAILED_PRECONDITION: "refused",
    StatusCode.UNAVAILABLE: "try again later",
    StatusCode.ABORTED: "try again later",
    StatusCode.RESOURCE_EXHAUSTED: BUSY,
}


# The retryable-soon refusal (see the module docstring). The text says nothing
# of the server's directory beyond "not yet"; the delay is a hint, bounded here
# so that a server cannot make its callers hammer it nor wait for long.
NOT_VERIFIABLE_YET: Final = "directory unavailable, try again later"
RETRY_AFTER: Final = "retry-after"
RETRY_AFTER_BOUNDS: Final = (1.0, 10.0)


def retry_soon_metadata(seconds: float) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of a retryable-soon refusal: try again in ``seconds``."""
    return ((RETRY_AFTER, str(max(1, round(seconds)))),)


def retry_after_of(exc: grpc.RpcError) -> float | None:
    """The bounded ``retry-after`` delay of a failed call, or None when it names none."""
    if not isinstance(exc, grpc.Call):
        return None
    for key, value in exc.trailing_metadata() or ():
        if key == RETRY_AFTER:
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return None
            if seconds != seconds:  # NaN
                return None
            low, high = RETRY_AFTER_BOUNDS
            return min(high, max(low, seconds))
    return None


def status_for(exc: errors.RecordsTransferError) -> grpc.StatusCode:
    """The status code a server answers ``exc`` with (INTERNAL for none in the table)."""
    for cls, code in CODES:
        if isinstance(exc, cls):
            return code
    return StatusCode.INTERNAL


def peer_text(code: grpc.StatusCode) -> str:
    """The detail-free text a peer is told with ``code``."""
    return PEER_TEXT.get(code, "refused")


@dataclass(frozen=True)
class Remote:
    """How a client names one kind of server in the errors it raises.

    Every text may use ``{code}`` (the status code's name) and ``{details}``
    (the server's text). ``None`` means "no refinement: a plain refusal".
    """

    refusal: type[errors.TransferError] | type[errors.RegistryError]
    refused: str  # any other code: a refusal for good
    unreachable: str  # a code in RETRYABLE
    already: str = "{details}"  # ALREADY_EXISTS
    retry_soon: str = "{details}"  # UNAVAILABLE with a retry-after: a RetrySoon
    not_authorized: str | None = None  # UNAUTHENTICATED, PERMISSION_DENIED
    unauthenticated: str | None = None  # UNAUTHENTICATED: an EnrollmentRefused
    not_found: str | None = None  # NOT_FOUND: a DirectoryError
    invalid: str | None = None  # INVALID_ARGUMENT


def error_from_rpc(exc: grpc.RpcError, remote: Remote) -> errors.RecordsTransferError:
    """The project's error for a failed call to ``remote`` (to be raised ``from exc``)."""
    code = exc.code() if isinstance(exc, grpc.Call) else StatusCode.UNKNOWN
    details = (exc.details() or "") if isinstance(exc, grpc.Call) else ""

    def text(template: str) -> str:
        return template.format(code=code.name, details=details)

    if code == StatusCode.ALREADY_EXISTS:
        return errors.Duplicate(text(remote.already))
    if code == StatusCode.UNAVAILABLE:
        retry_after = retry_after_of(exc)
        if retry_after is not None:
            return errors.RetrySoon(text(remote.retry_soon), retry_after)
    if code in RETRYABLE:
        return errors.PeerUnavailable(text(remote.unreachable))
    if code == StatusCode.UNAUTHENTICATED and remote.unauthenticated is not None:
        return errors.EnrollmentRefused(text(remote.unauthenticated))
    if (
        code in (StatusCode.UNAUTHENTICATED, StatusCode.PERMISSION_DENIED)
        and remote.not_authorized is not None
    ):
        return remote.refusal(text(remote.not_authorized))
    if code == StatusCode.NOT_FOUND and remote.not_found is not None:
        return errors.DirectoryError(text(remote.not_found))
    if code == StatusCode.INVALID_ARGUMENT and remote.invalid is not None:
        return remote.refusal(text(remote.invalid))
    return remote.refusal(text(remote.refused))
