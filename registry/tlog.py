"""The registry's directory log: an append-only RFC 9162 Merkle tree of every entry it signs.

Leaf ``i`` is the ``i``-th directory entry version the registry signed (its
signed body, the bytes districts verify), appended in the same transaction as
the entry itself (``registry.entries``), so no entry is ever served that is not
logged. Checkpoints (``rt_client.checkpoint``) are signed on demand, one per
tree size, with the registry's directory key; witnesses' cosignatures are
merged into the stored note. Each append also stores the hashes of the
complete subtrees its leaf completes, so tree heads and proofs read O(log n)
stored hashes whatever the log's size (``rt_client.merkle``). ``audit`` is
``rt-registry log verify``: it recomputes everything from the entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.store import StoreTransaction
from rt_client import merkle
from rt_client.checkpoint import (
    LOG_ORIGIN,
    Checkpoint,
    NoteVerifier,
    merge_signatures,
    open_checkpoint,
    open_note,
    sign_note,
)
from rt_client.errors import IntegrityError, InvalidInput, NotFound

__all__ = ["AuditReport", "DirectoryLog", "append_entry"]


def append_entry(tx: StoreTransaction, code: str, version: int, body: bytes) -> int:
    """Log one signed entry version (its leaf is RFC 9162's hash of ``body``); returns its index."""
    leaf = merkle.leaf_hash(body)
    index = tx.append_leaf(code, version, leaf)
    siblings = tx.subtree_hashes(merkle.left_siblings(index))
    try:
        tx.add_subtrees(merkle.completed_nodes(index, leaf, siblings))
    except KeyError as exc:
        raise IntegrityError(f"the stored log lacks the subtree {exc.args[0]}") from None
    return index


def _tree_hashes(tx: StoreTransaction, ranges: list[tuple[int, int]]) -> list[bytes]:
    """MTH of each leaf range, from O(log n) stored complete subtrees. Raises ``IntegrityError``."""
    nodes = tx.subtree_hashes({node for s, e in ranges for node in merkle.subtrees_of(s, e)})
    return [merkle.hash_range(s, e, nodes) for s, e in ranges]


@dataclass(frozen=True)
class AuditReport:
    size: int
    checkpoint_size: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


class DirectoryLog:
    """Checkpoints and proofs of the directory log, over a store transaction."""

    def __init__(
        self, signing_key: Ed25519PrivateKey, witnesses: Sequence[NoteVerifier] = ()
    ) -> None:
        self._key = signing_key
        self._witnesses = tuple(witnesses)  # kept first when a note must be cut
        self.verifier = NoteVerifier(LOG_ORIGIN, signing_key.public_key().public_bytes_raw())

    def witnessed(self, tx: StoreTransaction, min_cosignatures: int) -> bytes:
        """The newest checkpoint with ``min_cosignatures`` lines besides ours. Raises ``NotFound``.

        The registry does not judge the witnesses: each district checks the ones it trusts.
        """
        if min_cosignatures == 0:
            return self.checkpoint(tx)
        for _, note in tx.checkpoint_notes():
            if note.count("\u2014 ".encode()) - 1 >= min_cosignatures:
                return note
        raise NotFound(f"no checkpoint has {min_cosignatures} witness cosignatures yet")

    def checkpoint(self, tx: StoreTransaction) -> bytes:
        """The newest signed checkpoint note, signing one first if the log has grown."""
        size = tx.log_size()
        latest = tx.latest_checkpoint()
        if latest is not None and latest[0] == size:
            return latest[2]
        (root,) = _tree_hashes(tx, [(0, size)])
        note = sign_note(Checkpoint.text(LOG_ORIGIN, size, root), LOG_ORIGIN, self._key)
        tx.add_checkpoint(size, root, note)
        return note

    def inclusion(
        self, tx: StoreTransaction, code: str, version: int, tree_size: int
    ) -> tuple[int, list[bytes]]:
        """(leaf index, audit path) of one entry version in the tree of ``tree_size``.

        Raises ``NotFound`` if that version is not logged within that size,
        ``InvalidInput`` if the size is beyond the log.
        """
        size = tx.log_size()
        if not 0 < tree_size <= size:
            raise InvalidInput(f"tree_size: the log has {size} entries")
        index = tx.leaf_index(code, version)
        if index is None or index >= tree_size:
            raise NotFound(f"entry version {version} of district {code} is not in that tree")
        return index, _tree_hashes(tx, merkle.inclusion_ranges(index, tree_size))

    def consistency(self, tx: StoreTransaction, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof. Raises ``InvalidInput`` for sizes outside the log."""
        size = tx.log_size()
        if not 0 <= old_size <= new_size <= size:
            raise InvalidInput(f"sizes: need 0 <= old_size <= new_size <= {size}")
        if old_size in (0, new_size):
            return []
        return _tree_hashes(tx, merkle.consistency_ranges(old_size, new_size))

    def add_cosignatures(self, tx: StoreTransaction, cosigned: bytes) -> tuple[int, int]:
        """Store a witness-cosigned copy of one of our checkpoints: (tree size, lines left out).

        The registry's own signature must verify and the text must be a
        checkpoint we published; the witness lines are kept as they are (each
        district checks the witnesses it trusts), those of the configured
        witnesses first, so many that the note would pass 4 KiB / 16 lines
        left out (``merge_signatures``). A configured witness's line that does
        not verify is refused. Raises ``IntegrityError``.
        """
        checkpoint = open_checkpoint(cosigned, self.verifier)
        stored = tx.checkpoint_note(checkpoint.size)
        if stored is None:
            raise IntegrityError(f"the registry published no checkpoint of size {checkpoint.size}")
        text, _ = open_note(stored, [self.verifier])
        new_text, _ = open_note(cosigned, [self.verifier, *self._witnesses])
        if text != new_text:
            raise IntegrityError("that checkpoint is not the one the registry published")
        merged, left_out = merge_signatures(stored, cosigned, self._witnesses)
        tx.set_checkpoint_note(checkpoint.size, merged)
        return checkpoint.size, left_out

    def audit(self, tx: StoreTransaction) -> AuditReport:
        """Recompute every leaf from the stored entries and every checkpoint's root."""
        problems: list[str] = []
        logged = tx.logged_entries()
        leaves: list[bytes] = []
        seen: dict[str, int] = {}
        for index, code, version, stored_hash, body in logged:
            if body is None:
                problems.append(f"leaf {index}: entry {code} v{version} is missing from the store")
                leaves.append(stored_hash)
                continue
            leaf = merkle.leaf_hash(body)
            if leaf != stored_hash:
                problems.append(
                    f"leaf {index}: entry {code} v{version} was rewritten after logging"
                )
            if version <= seen.get(code, 0):
                problems.append(f"leaf {index}: entry {code} v{version} logged after a newer one")
            seen[code] = version
            leaves.append(leaf)
        problems += _check_subtrees(leaves, tx.stored_subtrees(), tx.log_size())
        latest = tx.latest_checkpoint()
        if latest is not None:
            size, root, note = latest
            try:
                checkpoint = open_checkpoint(note, self.verifier)
            except IntegrityError as exc:
                problems.append(f"checkpoint {size}: {exc}")
            else:
                if checkpoint.size != size or checkpoint.root_hash != root:
                    problems.append(f"checkpoint {size}: the stored note says otherwise")
            if size > len(leaves):
                problems.append(f"the log has {len(leaves)} leaves, its checkpoint says {size}")
            elif merkle.root_hash(leaves[:size]) != root:
                problems.append(f"checkpoint {size}: the entries do not hash to its root")
        return AuditReport(
            size=len(leaves),
            checkpoint_size=0 if latest is None else latest[0],
            problems=tuple(problems),
        )


def _check_subtrees(
    leaves: list[bytes], stored: dict[merkle.Node, bytes], head_size: int
) -> list[str]:
    """The stored subtree hashes (which proofs are made of) against the recomputed leaves."""
    problems: list[str] = []
    if head_size != len(leaves):
        problems.append(f"the log's head says {head_size} leaves, the log has {len(leaves)}")
    level, row = 0, leaves
    expected: dict[merkle.Node, bytes] = {}
    while len(row) > 1:
        row = [merkle.node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        level += 1
        expected.update(((level, i), h) for i, h in enumerate(row))
    for node, value in sorted(stored.items()):
        if expected.get(node) != value:
            problems.append(f"stored subtree {node} does not hash the leaves under it")
    missing = len(expected.keys() - stored.keys())
    if missing:
        problems.append(f"{missing} complete subtrees are not stored")
    return problems
