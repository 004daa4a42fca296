"""Peer authorization: every ``DistrictPeer`` call is authorized here, and only here.

The rule (DESIGN.md section 3), checked before any servicer code runs:

1. The connection is TLS 1.2 or 1.3 (gRPC's ``ssl_tls_version`` property; the
   listener already refuses older versions, this is the belt to those braces)
   and the peer presented a certificate (the listener requires one from the
   registry CA).
2. The certificate has exactly one URI SAN, and it is a district identity
   ``spiffe://records-transfer/district/<code>``.
3. The SHA-256 of the certificate's SubjectPublicKeyInfo equals the
   ``tls_spki_sha256`` of that district's current, active, registry-signed
   directory entry. This is how revocation and key rotation take effect: gRPC
   Python has no CRL support, but a revoked district has no active entry and a
   rotated-away key is no longer pinned.

Failures abort with a detail-free status -- ``UNAUTHENTICATED`` when the peer
has no usable identity, ``PERMISSION_DENIED`` when the identity is refused,
``UNAVAILABLE`` with a short ``retry-after`` when the directory cannot be
consulted (``rt_client.status_codes``: retryable soon) -- and the reason goes
to the ``rt_server.rpc.auth`` log (never key material). On success the servicer
finds the peer with ``current_peer()`` and hands its code to the flow, whose
``rt_server.flows.claims.require_claimed`` checks every district named inside
a message against it (rule 4 of section 3).

The gate runs when a call's headers arrive, before any message is read, and
gives each district its own share of the server's call slots
(``rt_client.callgate``): a district that is refused holds no slot, and one
that floods or stalls holds only its share, for a bounded time. Only methods
under ``/rt.v1.DistrictPeer/`` need an authorized district: health checking
and reflection stay open to ordinary tools (to any holder of a registry-issued
certificate), within the caller's share.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NoReturn, Protocol, runtime_checkable

import grpc

from rt_client.callgate import NOT_AUTHORIZED, Admission, CallGate, caller_address, refuse
from rt_client.directory import Directory, DirectoryEntry
from rt_client.errors import (
    DirectoryError,
    PeerAuthError,
    PeerUnavailable,
    RecordsTransferError,
    RegistryError,
)
from rt_client.ids import DistrictCode
from rt_client.status_codes import NOT_VERIFIABLE_YET, retry_soon_metadata
from rt_client.tlog import GOSSIP_KEY, LogVerifier, SplitView, gossip_note
from rt_client.tls import (
    ALLOWED_TLS_VERSIONS,
    district_of_certificate,
    negotiated_tls_version,
    peer_certificate,
    spki_sha256,
)

__all__ = [
    "GATED_PREFIX",
    "NOT_AUTHORIZED",
    "AuthenticatedPeer",
    "PeerAuthInterceptor",
    "authorize_peer",
    "current_peer",
]

log = logging.getLogger("rt_server.rpc.auth")

GATED_PREFIX: Final = "/rt.v1.DistrictPeer/"
# After a key mismatch the directory is asked again (the peer may have just
# renewed or rotated its key), but at most this often per district and key: a
# peer presenting stale certificates (each one the registry once signed) cannot
# turn us into a load generator against the registry.
_REFRESH_INTERVAL_SECONDS: Final = 30.0
# Keys remembered for that interval; past it, a new key waits its turn.
_REFRESH_MEMORY: Final = 4096
# When the directory cannot be consulted, callers are told to try again this
# soon: each try costs us one registry lookup, which fails fast while it is down.
_RETRY_AFTER_SECONDS: Final = 3.0


@dataclass(frozen=True)
class AuthenticatedPeer:
    """The district at the other end of the call, and the entry that vouched for it."""

    code: DistrictCode
    entry: DirectoryEntry


_CURRENT_PEER: Final[contextvars.ContextVar[AuthenticatedPeer | None]] = contextvars.ContextVar(
    "rt_server_auth_current_peer", default=None
)


def current_peer() -> AuthenticatedPeer:
    """The authorized peer of the call being served.

    Raises ``PeerAuthError`` outside an authorized call (a handler that is not
    behind ``PeerAuthInterceptor`` must not act for any district).
    """
    peer = _CURRENT_PEER.get()
    if peer is None:
        raise PeerAuthError("no authorized peer for this call")
    return peer


class _NotAuthenticated(PeerAuthError):
    """The peer has no usable identity (as opposed to an identity that is refused)."""


@runtime_checkable
class _Forgetful(Protocol):
    def forget(self, code: str) -> None: ...


def authorize_peer(
    auth_context: Mapping[str, Sequence[bytes]], directory: Directory
) -> AuthenticatedPeer:
    """Apply the rule of the module docstring to a call's ``auth_context()``.

    Raises ``PeerAuthError`` (its private subclass for "no identity"),
    ``DirectoryError`` (revoked, unknown, or unverifiable entry) or
    ``PeerUnavailable`` / ``RegistryError`` (directory unreachable).
    """
    cert = peer_certificate(auth_context)
    if cert is None:
        raise _NotAuthenticated("no TLS client certificate")
    version = negotiated_tls_version(auth_context)
    # Fail closed if gRPC stops reporting the version: the check would silently vanish.
    if version not in ALLOWED_TLS_VERSIONS:
        raise _NotAuthenticated(f"TLS version {version!r} is not allowed")
    try:
        code = district_of_certificate(cert)
    except PeerAuthError as exc:
        raise _NotAuthenticated(str(exc)) from exc
    entry = directory.lookup(code)
    if not entry.is_active:  # a Directory must refuse these itself; never rely on it alone
        raise DirectoryError(f"district {code} is not active")
    if not hmac.compare_digest(spki_sha256(cert), entry.tls_spki_sha256):
        raise PeerAuthError(f"district {code} presented a TLS key its directory entry does not pin")
    return AuthenticatedPeer(code=code, entry=entry)


class PeerAuthInterceptor(CallGate):
    """The peer server's gate: authorizes every ``DistrictPeer`` call at its start.

    ``per_peer`` calls at once per district; a single request must arrive
    within ``message_wait_seconds``, each frame of a stream within ``idle_seconds``.
    """

    def __init__(
        self,
        directory: Directory,
        *,
        gossip: LogVerifier | None = None,
        gated_prefix: str = GATED_PREFIX,
        per_peer: int = 16,
        message_wait_seconds: float = 10.0,
        idle_seconds: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            self._admit,
            per_caller=per_peer,
            message_wait_seconds=message_wait_seconds,
            idle_seconds=idle_seconds,
        )
        self._directory = directory
        self._gossip = gossip
        self._prefix = gated_prefix
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # (district, SPKI SHA-256 of the key it presented) -> when we last looked
        # its entry up again for that key: a renewed key is looked up at once
        # however soon after the last one; an old key refused costs one lookup.
        self._last_refresh: dict[tuple[str, bytes], float] = {}

    def _admit(self, context: grpc.ServicerContext, method: str) -> Admission:
        if method.startswith(self._prefix):
            peer = self._authorize(context, method)
            if self._gossip is not None:
                self._exchange_checkpoints(context, method, peer.code)
            return Admission(caller=peer.code, run_in=_context_with(peer))
        # Health and reflection: no authorization, but a share all the same,
        # the certificate's district's when it names one.
        cert = peer_certificate(context.auth_context())
        try:
            caller = district_of_certificate(cert) if cert is not None else None
        except PeerAuthError:
            caller = None
        return Admission(caller=caller or caller_address(context))

    # -- authorization -----------------------------------------------------

    def _authorize(self, context: grpc.ServicerContext, method: str) -> AuthenticatedPeer:
        auth_context = context.auth_context()
        try:
            try:
                return authorize_peer(auth_context, self._directory)
            except PeerAuthError as exc:
                if isinstance(exc, _NotAuthenticated) or not self._may_refresh(auth_context):
                    raise
                # The peer may have rotated its key since we cached its entry.
                return authorize_peer(auth_context, self._directory)
        except _NotAuthenticated as exc:
            self._refuse(context, method, grpc.StatusCode.UNAUTHENTICATED, exc)
        except (PeerAuthError, DirectoryError) as exc:
            self._refuse(context, method, grpc.StatusCode.PERMISSION_DENIED, exc)
        except (PeerUnavailable, RegistryError) as exc:
            # Not "down": up, and able to take the call once the registry
            # answers. A fixed text and a short retry-after tell the sender so
            # (rt_client.status_codes), and nothing more.
            log.warning("%s from %s: directory unavailable: %s", method, context.peer(), exc)
            context.set_trailing_metadata(retry_soon_metadata(_RETRY_AFTER_SECONDS))
            refuse(context, grpc.StatusCode.UNAVAILABLE, NOT_VERIFIABLE_YET)
        except RecordsTransferError as exc:
            self._refuse(context, method, grpc.StatusCode.PERMISSION_DENIED, exc)
        except Exception:
            log.exception("%s from %s: authorization failed unexpectedly", method, context.peer())
            refuse(context, grpc.StatusCode.INTERNAL, NOT_AUTHORIZED)

    def _exchange_checkpoints(self, context: grpc.ServicerContext, method: str, peer: str) -> None:
        """Gossip (rt_client.tlog): answer with our checkpoint, check the caller's.

        Ours goes in the response headers even when the call is refused, so the
        caller sees the split view too. A split view is recorded (audit log) and
        the call refused.
        """
        assert self._gossip is not None
        ours = self._gossip.note()
        if ours is not None:
            context.send_initial_metadata(((GOSSIP_KEY, ours),))
        theirs = gossip_note(context.invocation_metadata())
        if theirs is None:
            return
        try:
            self._gossip.observe_peer(theirs, peer)
        except SplitView as exc:
            self._refuse(context, method, grpc.StatusCode.PERMISSION_DENIED, exc)

    def _may_refresh(self, auth_context: Mapping[str, Sequence[bytes]]) -> bool:
        if not isinstance(self._directory, _Forgetful):
            return False
        cert = peer_certificate(auth_context)
        if cert is None:
            return False
        code = district_of_certificate(cert)
        key = (code, spki_sha256(cert))
        now = self._monotonic()
        with self._lock:
            last = self._last_refresh.get(key)
            if last is not None and now - last < _REFRESH_INTERVAL_SECONDS:
                return False
            if len(self._last_refresh) >= _REFRESH_MEMORY:
                self._last_refresh = {
                    k: t
                    for k, t in self._last_refresh.items()
                    if now - t < _REFRESH_INTERVAL_SECONDS
                }
                if len(self._last_refresh) >= _REFRESH_MEMORY:
                    return False  # a flood of distinct keys: no more lookups for now
            self._last_refresh[key] = now
        self._directory.forget(code)
        return True

    @staticmethod
    def _refuse(
        context: grpc.ServicerContext, method: str, status: grpc.StatusCode, exc: Exception
    ) -> NoReturn:
        log.warning("%s from %s refused (%s): %s", method, context.peer(), status.name, exc)
        refuse(context, status, NOT_AUTHORIZED)


def _context_with(peer: AuthenticatedPeer) -> contextvars.Context:
    """A fresh context in which ``current_peer()`` is ``peer``: one per call, never shared."""
    run_in = contextvars.copy_context()
    run_in.run(_CURRENT_PEER.set, peer)
    return run_in
