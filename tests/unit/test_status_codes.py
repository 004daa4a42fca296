"""The one table between exceptions and gRPC status codes (rt_client.status_codes).

Both directions, for every server and client that uses it: the district's error
interceptor and the registry's servicers answer with ``status_for``; calls to a
district, to the registry and an enrollment read the code with ``error_from_rpc``.
"""

from __future__ import annotations

import inspect

import grpc
import pytest

import registry.servicer
import rt_server.rpc.errors
from rt_client import directory as directory_module
from rt_client import enroll, errors, peers, status_codes
from rt_client.status_codes import CODES, RETRYABLE, error_from_rpc, status_for

Code = grpc.StatusCode


class _Failed(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A failed call as a gRPC client sees it."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str = "why",
        trailing: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    # The rest of grpc.Call, unused here.
    def initial_metadata(self):  # type: ignore[no-untyped-def]
        return None

    def trailing_metadata(self):  # type: ignore[no-untyped-def]
        return self._trailing

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback) -> bool:  # type: ignore[no-untyped-def]
        return False


def _project_errors() -> list[type[errors.RecordsTransferError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.RecordsTransferError) and cls is not errors.RecordsTransferError
    ]


def test_no_row_is_shadowed_by_an_earlier_parent() -> None:
    for i, (later, _) in enumerate(CODES):
        for earlier, _ in CODES[:i]:
            assert not issubclass(later, earlier), f"{later.__name__} after {earlier.__name__}"


def test_every_project_error_has_a_code() -> None:
    for cls in _project_errors():
        assert status_for(cls("x")) != Code.INTERNAL, cls.__name__


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.Duplicate("again"), Code.ALREADY_EXISTS),  # both servers: not INVALID_ARGUMENT
        (errors.InvalidInput("bad"), Code.INVALID_ARGUMENT),
        (errors.EnrollmentRefused("no"), Code.UNAUTHENTICATED),
        (errors.CallerNotAuthenticated("who?"), Code.UNAUTHENTICATED),
        (errors.PeerAuthError("not you"), Code.PERMISSION_DENIED),
        (errors.NotFound("gone"), Code.NOT_FOUND),
        (errors.Conflict("race"), Code.ABORTED),
        (errors.Overloaded("busy"), Code.RESOURCE_EXHAUSTED),
        (errors.PeerUnavailable("later"), Code.UNAVAILABLE),
        (errors.RecordsTransferError("?"), Code.INTERNAL),
    ],
)
def test_status_for(exc: errors.RecordsTransferError, code: grpc.StatusCode) -> None:
    assert status_for(exc) == code


def test_the_district_and_the_registry_answer_by_the_same_table() -> None:
    assert rt_server.rpc.errors.status_for is status_codes.status_for
    assert registry.servicer.status_for is status_codes.status_for


# What each client raised for each code before the table was shared, kept as it was.
_PEER_EXPECTED = {
    Code.ALREADY_EXISTS: (errors.Duplicate, "the other district already has this"),
    Code.UNAVAILABLE: (errors.PeerUnavailable, "the other district could not be reached"),
    Code.ABORTED: (errors.PeerUnavailable, "could not be reached (ABORTED)"),
    Code.INTERNAL: (errors.PeerUnavailable, "could not be reached (INTERNAL)"),
    Code.PERMISSION_DENIED: (errors.TransferError, "refused the call (PERMISSION_DENIED)"),
    Code.NOT_FOUND: (errors.TransferError, "refused the call (NOT_FOUND)"),
    Code.INVALID_ARGUMENT: (errors.TransferError, "refused the call (INVALID_ARGUMENT)"),
    Code.FAILED_PRECONDITION: (errors.TransferError, "refused the call (FAILED_PRECONDITION)"),
}


@pytest.mark.parametrize("code", list(_PEER_EXPECTED))
def test_a_districts_answer(code: grpc.StatusCode) -> None:
    cls, text = _PEER_EXPECTED[code]

    def call() -> None:
        raise _Failed(code)

    with pytest.raises(cls, match=text.replace("(", r"\(").replace(")", r"\)")) as info:
        peers.call_peer(call)
    assert type(info.value) is cls  # not a subclass: the flow reacts by exact kind


def _registry_answer(code: grpc.StatusCode, district: str | None) -> errors.RecordsTransferError:
    def call() -> None:
        raise _Failed(code)

    with pytest.raises(errors.RecordsTransferError) as info:
        directory_module._call_registry(call, district)
    return info.value


def test_the_registrys_answers_to_a_district() -> None:
    assert isinstance(_registry_answer(Code.UNAVAILABLE, "1234567"), errors.PeerUnavailable)
    assert isinstance(_registry_answer(Code.INTERNAL, None), errors.PeerUnavailable)
    missing = _registry_answer(Code.NOT_FOUND, "1234567")
    assert type(missing) is errors.DirectoryError
    assert str(missing) == "district 1234567 is not registered"
    refused = _registry_answer(Code.NOT_FOUND, None)  # a search: no district to name
    assert type(refused) is errors.RegistryError
    assert str(refused) == "the registry refused the request (NOT_FOUND)"
    for code in (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED):
        answer = _registry_answer(code, "1234567")
        assert type(answer) is errors.RegistryError
        assert "refused this district's certificate" in str(answer)
    odd = _registry_answer(Code.NOT_FOUND, "{0}")  # braces in a name are text, not a template
    assert str(odd) == "district {0} is not registered"


def _enroll_answer(
    code: grpc.StatusCode, *, enrolling: bool, details: str = "why"
) -> errors.RecordsTransferError:
    def call() -> None:
        raise _Failed(code, details)

    with pytest.raises(errors.RecordsTransferError) as info:
        enroll.registry_call(call, "registry.example:{7443}", enrolling=enrolling)
    return info.value


def test_the_registrys_answers_to_an_enrollment() -> None:
    refused = _enroll_answer(Code.UNAUTHENTICATED, enrolling=True)
    assert type(refused) is errors.EnrollmentRefused
    assert "authorization code is wrong" in str(refused)
    not_authorized = _enroll_answer(Code.UNAUTHENTICATED, enrolling=False)
    assert type(not_authorized) is errors.RegistryError
    assert "refused this district's certificate" in str(not_authorized)
    rejected = _enroll_answer(Code.INVALID_ARGUMENT, enrolling=True, details="keys.hpke_*: bad")
    assert str(rejected) == "the registry rejected the request: keys.hpke_*: bad"
    unreachable = _enroll_answer(Code.UNAVAILABLE, enrolling=True)
    assert type(unreachable) is errors.PeerUnavailable
    assert str(unreachable).startswith("cannot reach the registry at registry.example:{7443} (")
    failed = _enroll_answer(Code.FAILED_PRECONDITION, enrolling=False)
    assert str(failed) == "the registry failed the request (FAILED_PRECONDITION)"


def test_every_server_code_reads_back_as_its_kind() -> None:
    """Round trip: what a district raises, its peer reads as the kind the flow reacts to."""
    for cls in _project_errors():
        code = status_for(cls("x"))
        back = error_from_rpc(_Failed(code), peers.PEER)
        if cls is errors.Duplicate:
            assert isinstance(back, errors.Duplicate)
        elif code in RETRYABLE:
            assert isinstance(back, errors.PeerUnavailable), cls.__name__
        else:
            assert type(back) is errors.TransferError, cls.__name__


def test_a_district_that_cannot_verify_us_yet_is_told_apart_from_one_that_is_down() -> None:
    """UNAVAILABLE with a retry-after (the peer gate's "directory unavailable") is
    ``RetrySoon`` with the bounded delay; without one it is a district that is down."""
    soon = status_codes.retry_soon_metadata(3.0)
    gate = _Failed(Code.UNAVAILABLE, status_codes.NOT_VERIFIABLE_YET, soon)
    answer = error_from_rpc(gate, peers.PEER)
    assert type(answer) is errors.RetrySoon and answer.retry_after == 3.0
    assert "could not verify this district yet" in str(answer)
    down = error_from_rpc(_Failed(Code.UNAVAILABLE), peers.PEER)
    assert type(down) is errors.PeerUnavailable
    low, high = status_codes.RETRY_AFTER_BOUNDS
    for sent, read in (("0", low), ("-5", low), ("86400", high), ("2.5", 2.5)):
        got = error_from_rpc(_Failed(Code.UNAVAILABLE, "x", (("retry-after", sent),)), peers.PEER)
        assert isinstance(got, errors.RetrySoon) and got.retry_after == read, sent
    for junk in ("soon", "nan", ""):
        got = error_from_rpc(_Failed(Code.UNAVAILABLE, "x", (("retry-after", junk),)), peers.PEER)
        assert type(got) is errors.PeerUnavailable, junk
    # Only UNAVAILABLE says "soon": a refusal with the header stays a refusal.
    refused = error_from_rpc(_Failed(Code.PERMISSION_DENIED, "x", soon), peers.PEER)
    assert type(refused) is errors.TransferError
