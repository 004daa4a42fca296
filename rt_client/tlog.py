"""A district's view of the directory log: entries accepted only if logged, and split views caught.

``LogVerifier`` keeps the newest checkpoint this district has verified and
the rollback floor (the highest entry version seen per district, with the
hash of its body), both persisted in ``directory-log.json`` (mode 0600)
beside the keys, so a restart keeps them. An entry is accepted only when:

- its version is not below the floor (and, at the floor, its body is the same);
- the registry's current checkpoint verifies (its Ed25519 note signature; and
  ``witnesses_required`` of the configured witnesses' cosignatures);
- that checkpoint is consistent with the last one we verified (RFC 9162
  consistency proof): a checkpoint that is older (stale), the same size with
  another root, or does not extend ours is refused -- the registry rewrote,
  truncated or forked its log;
- the entry is in it (RFC 9162 inclusion proof).

Gossip (``observe_peer``): every peer call carries the caller's checkpoint in
the ``rt-checkpoint-bin`` metadata and every answer the callee's. A peer's
checkpoint that is not consistent with ours -- the registry showed the two of
us different logs, a split view -- raises ``SplitView``; the district records it
in its audit log (``on_split_view``) and refuses the call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import grpc

from rt_client import merkle
from rt_client.checkpoint import (
    MAX_NOTE_SIZE,
    Checkpoint,
    NoteVerifier,
    open_checkpoint,
)
from rt_client.errors import (
    ConfigError,
    DirectoryError,
    IntegrityError,
    PeerUnavailable,
)
from rt_client.identity import write_file_atomically

__all__ = [
    "GOSSIP_KEY",
    "STATE_FILE",
    "GossipClientInterceptor",
    "LogFetcher",
    "LogVerifier",
    "SplitView",
    "gossip_note",
]

log = logging.getLogger("rt_client.tlog")

STATE_FILE: Final = "directory-log.json"
# Binary gRPC metadata (the -bin suffix): the sender's newest checkpoint note.
GOSSIP_KEY: Final = "rt-checkpoint-bin"


class SplitView(DirectoryError):
    """The registry showed another party a log that is not consistent with ours."""


class LogFetcher(Protocol):
    """The registry's log RPCs (``rt_client.directory`` wraps the gRPC stub)."""

    def checkpoint(self, min_cosignatures: int) -> bytes: ...

    def inclusion(self, code: str, version: int, tree_size: int) -> tuple[int, list[bytes]]: ...

    def consistency(self, old_size: int, new_size: int) -> list[bytes]: ...


SplitViewReport = Callable[[str, str], None]
"""Called with (the peer's district code or "registry", what was seen) on a split view."""


@dataclass(frozen=True)
class _Floor:
    version: int
    body_sha256: bytes


class LogVerifier:
    """The trusted log state of one district (see the module docstring). Thread-safe."""

    def __init__(
        self,
        fetcher: LogFetcher,
        log_key: NoteVerifier,
        *,
        witnesses: Sequence[NoteVerifier] = (),
        witnesses_required: int = 0,
        state_path: Path | None = None,
        on_split_view: SplitViewReport | None = None,
    ) -> None:
        if not 0 <= witnesses_required <= len(witnesses):
            raise ConfigError("witnesses_required: must be from 0 to the number of witness_keys")
        self._fetcher = fetcher
        self._log_key = log_key
        self._witnesses = tuple(witnesses)
        self._required = witnesses_required
        self._path = state_path
        self._on_split_view = on_split_view
        self._lock = threading.RLock()
        self._checkpoint: Checkpoint | None = None
        self._floors: dict[str, _Floor] = {}
        if state_path is not None and state_path.exists():
            self._load(state_path)

    # -- state ---------------------------------------------------------------

    @property
    def checkpoint(self) -> Checkpoint | None:
        with self._lock:
            return self._checkpoint

    def floor(self, code: str) -> int | None:
        with self._lock:
            found = self._floors.get(code)
            return None if found is None else found.version

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_bytes())
            floors = {
                str(code): _Floor(int(v), bytes.fromhex(h))
                for code, (v, h) in doc["floors"].items()
            }
            note = doc.get("checkpoint")
            checkpoint = None
            if note is not None:
                checkpoint = open_checkpoint(base64.b64decode(note, validate=True), self._log_key)
        except (OSError, ValueError, KeyError, TypeError, binascii.Error, IntegrityError) as exc:
            raise ConfigError(
                f"{path} (the directory log state) is damaged or was signed by another registry "
                "key; restore it from a backup (deleting it forgets the rollback floor)"
            ) from exc
        self._floors, self._checkpoint = floors, checkpoint

    def _save(self, checkpoint: Checkpoint | None, floors: dict[str, _Floor]) -> None:
        if self._path is None:
            return
        doc: dict[str, Any] = {
            "checkpoint": None
            if checkpoint is None
            else base64.b64encode(checkpoint.note).decode(),
            "floors": {c: [f.version, f.body_sha256.hex()] for c, f in sorted(floors.items())},
        }
        write_file_atomically(self._path, json.dumps(doc, indent=1).encode(), 0o600)

    # -- entries ---------------------------------------------------------------

    def accept_entry(self, code: str, version: int, body: bytes) -> None:
        """Accept a verified entry's signed ``body`` only if logged and not rolled back.

        Raises ``DirectoryError`` (``SplitView`` for an inconsistent log) if it
        is refused, ``PeerUnavailable`` if the registry cannot be asked;
        nothing is changed then.
        """
        digest = hashlib.sha256(body).digest()
        with self._lock:
            floor = self._floors.get(code)
            if floor is not None and version < floor.version:
                log.warning(
                    "refused entry of %s: version %d below floor %d", code, version, floor.version
                )
                raise DirectoryError(
                    f"the registry served an older entry of district {code} (version {version}, "
                    f"already saw {floor.version}): refused as a possible rollback; tell the "
                    "registry operator"
                )
            if floor is not None and version == floor.version and digest != floor.body_sha256:
                raise DirectoryError(
                    f"the registry served two different entries of district {code} with the "
                    f"same version {version}: refused; tell the registry operator"
                )
            checkpoint = self._newer_checkpoint(self._fetcher.checkpoint(self._required))
            try:
                index, proof = self._fetcher.inclusion(code, version, checkpoint.size)
                merkle.verify_inclusion(
                    merkle.leaf_hash(body), index, checkpoint.size, proof, checkpoint.root_hash
                )
            except IntegrityError as exc:
                raise DirectoryError(
                    f"the entry of district {code} (version {version}) is not in the registry's "
                    "signed log: refused; tell the registry operator"
                ) from exc
            except DirectoryError as exc:
                raise DirectoryError(
                    f"the entry of district {code} (version {version}) is not in the log's "
                    f"checkpoint yet{' with enough witness cosignatures' if self._required else ''}"
                    "; try again later"
                ) from exc
            floors = {**self._floors, code: _Floor(version, digest)}
            self._save(checkpoint, floors)
            self._checkpoint, self._floors = checkpoint, floors

    def _open(self, note: bytes) -> Checkpoint:
        try:
            return open_checkpoint(note, self._log_key, self._witnesses)
        except IntegrityError as exc:
            raise DirectoryError(f"the registry's checkpoint does not verify: {exc}") from exc

    def _newer_checkpoint(self, note: bytes) -> Checkpoint:
        """The registry's checkpoint, verified and consistent with ours (not yet adopted)."""
        checkpoint = self._open(note)
        have = len(checkpoint.signers & {w.name for w in self._witnesses})
        if have < self._required:
            raise DirectoryError(
                f"the registry's checkpoint carries {have} of the {self._required} witness "
                "cosignatures this district requires: refused; ask the witnesses to cosign"
            )
        ours = self._checkpoint
        if ours is None:
            return checkpoint
        if checkpoint.size < ours.size:
            raise DirectoryError(
                f"the registry served a stale checkpoint (tree size {checkpoint.size}, this "
                f"district already saw {ours.size}): refused as a possible rollback"
            )
        self._check_extends(ours, checkpoint, "registry")
        return checkpoint

    def _check_extends(self, old: Checkpoint, new: Checkpoint, who: str) -> None:
        """Raise ``SplitView`` unless ``new`` (at least as large) extends ``old``."""
        if old.size == new.size:
            if old.root_hash != new.root_hash:
                self._split(who, f"two checkpoints of size {old.size} with different roots")
            return
        proof = self._fetcher.consistency(old.size, new.size)
        try:
            merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
        except IntegrityError:
            self._split(who, f"checkpoint {new.size} does not extend checkpoint {old.size}")

    def _split(self, who: str, what: str) -> None:
        detail = f"directory log split view ({who}): {what}"
        log.error("%s", detail)
        if self._on_split_view is not None:
            try:
                self._on_split_view(who, what)
            except Exception:  # recording must not hide the refusal
                log.exception("could not record the split view")
        raise SplitView(
            "the registry has shown another party a different directory log (a split view): "
            "refused; tell the registry operator and your county office"
        )

    # -- gossip ---------------------------------------------------------------

    def observe_peer(self, note: bytes, peer: str) -> None:
        """Check a peer's checkpoint against ours; adopt it if it extends ours.

        Raises ``SplitView`` if the two are inconsistent. A note that does not
        verify is ignored (logged): it proves nothing about the registry. When
        the registry cannot be asked for a proof, nothing is decided.
        """
        try:
            theirs = open_checkpoint(note, self._log_key, self._witnesses)
        except IntegrityError as exc:
            log.warning("ignored a checkpoint from %s that does not verify: %s", peer, exc)
            return
        with self._lock:
            ours = self._checkpoint
            if ours is None:
                return
            try:
                if theirs.size <= ours.size:  # the peer is behind us (or level)
                    self._check_extends(theirs, ours, peer)
                    return
                self._check_extends(ours, theirs, peer)
            except (PeerUnavailable, DirectoryError) as exc:
                if isinstance(exc, SplitView):
                    raise
                log.warning("could not check %s's checkpoint against ours: %s", peer, exc)
                return
            self._save(theirs, self._floors)
            self._checkpoint = theirs

    def note(self) -> bytes | None:
        """Our newest checkpoint note, to send to peers."""
        with self._lock:
            return None if self._checkpoint is None else self._checkpoint.note


def gossip_note(metadata: Sequence[tuple[str, str | bytes]] | None) -> bytes | None:
    """The peer's checkpoint from call metadata (the first, if bounded in size), or None."""
    for key, value in metadata or ():
        if key == GOSSIP_KEY and isinstance(value, bytes) and len(value) <= MAX_NOTE_SIZE:
            return value
    return None


class GossipClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
):
    """Sends our checkpoint on every call to ``peer``; checks the one its answer carries.

    A split view raises ``SplitView`` from the call (whatever the call's
    outcome): the flow treats it as a refusal.
    """

    def __init__(self, verifier: LogVerifier, peer: str) -> None:
        self._verifier = verifier
        self._peer = peer

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        note = self._verifier.note()
        if note is None:
            return details
        metadata = [*(details.metadata or ()), (GOSSIP_KEY, note)]
        return _CallDetails(
            details.method, details.timeout, metadata, details.credentials,
            details.wait_for_ready, details.compression,
        )  # fmt: skip

    def _check(self, call: Any) -> None:
        try:
            metadata = call.initial_metadata()
        except grpc.RpcError:  # no headers (the connection failed): nothing to check
            return
        note = gossip_note(metadata)
        if note is not None:
            self._verifier.observe_peer(note, self._peer)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = continuation(self._details(details), request)
        self._check(call)
        return call

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        # A delivery stream: our checkpoint goes with it. The call may be a
        # future (the delivery worker's), so its answer's headers are checked
        # when its result is taken, before the result is handed over.
        call = continuation(self._details(details), request_iterator)
        return _CheckedCall(call, self._check)


class _CheckedCall:
    """A stream's call/future whose ``result()`` first checks the answer's checkpoint."""

    def __init__(self, call: Any, check: Any) -> None:
        self._call = call
        self._check = check
        self._checked = False

    def result(self, timeout: float | None = None) -> Any:
        try:
            response = self._call.result(timeout)
        except grpc.RpcError:
            self._check_once()  # a split view outranks the refusal
            raise
        self._check_once()
        return response

    def _check_once(self) -> None:
        if not self._checked:
            self._checked = True
            self._check(self._call)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):  # type: ignore[misc]
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None
