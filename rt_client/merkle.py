"""The directory log's Merkle tree: RFC 9162 section 2.1 hashing, proofs and their verification.

Pure functions over leaf hashes (SHA-256, leaves prefixed 0x00, interior nodes
0x01, so a leaf can never pass for a node). Proof *generation* follows the
recursive definitions of RFC 9162 2.1.3.1 (PATH) and 2.1.4.1 (PROOF/SUBPROOF);
*verification* follows the iterative algorithms of 2.1.3.2 and 2.1.4.2, which
a verifier runs without the tree. The registry generates, districts, witnesses
and auditors verify; nothing here does I/O.

A log too large to rehash keeps the hashes of its *complete subtrees*
(``Node``: level ``l``, index ``i`` = the perfect subtree of leaves
``[i * 2**l, (i + 1) * 2**l)``), each stored once, when its last leaf is
appended (``completed_nodes``). Every hash a tree head or proof needs is then a
fold of at most ~log2(n) of them (``subtrees_of``, ``hash_range``):
``*_ranges`` say which leaf ranges a proof is made of.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Final

from rt_client.errors import IntegrityError

__all__ = [
    "HASH_SIZE",
    "Node",
    "completed_nodes",
    "consistency_ranges",
    "hash_range",
    "inclusion_ranges",
    "left_siblings",
    "subtrees_of",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"
# A proof longer than this cannot belong to any tree of 2**64 leaves or fewer.
_MAX_PROOF_LENGTH: Final = 128

# A complete subtree: (level, index), the leaves [index << level, (index + 1) << level).
Node = tuple[int, int]
NodeHash = tuple[int, int, bytes]


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d) (RFC 9162 2.1.1)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right) (RFC 9162 2.1.1)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of a list of *leaf hashes*; the empty tree's is SHA-256 of nothing."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(root_hash(leaves[:k]), root_hash(leaves[k:]))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) (RFC 9162 2.1.3.1): the audit path of leaf ``index``.

    Raises ``ValueError`` if ``index`` is not a leaf of the tree.
    """
    if not 0 <= index < len(leaves):
        raise ValueError("leaf index outside the tree")
    return _path(index, leaves)


def _path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(m, leaves[:k]), root_hash(leaves[k:])]
    return [*_path(m - k, leaves[k:]), root_hash(leaves[:k])]


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[n]) (RFC 9162 2.1.4.1): proves the first ``old_size`` leaves are a prefix.

    Raises ``ValueError`` unless 0 < old_size <= len(leaves).
    """
    if not 0 < old_size <= len(leaves):
        raise ValueError("old tree size outside the tree")
    return _subproof(old_size, leaves, complete=True)


def _subproof(m: int, leaves: Sequence[bytes], *, complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root_hash(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete=complete), root_hash(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], complete=False), root_hash(leaves[:k])]


# -- proofs from stored complete subtrees -------------------------------------------------------


def subtrees_of(start: int, end: int) -> list[Node]:
    """The complete subtrees making up leaves ``[start, end)``, left to right (largest first).

    Valid for the ranges RFC 9162's recursion visits (``start`` a multiple of a
    power of two at least ``end - start``): all that ``*_ranges`` return.
    """
    nodes: list[Node] = []
    while start < end:
        level = (end - start).bit_length() - 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def hash_range(start: int, end: int, nodes: Mapping[Node, bytes]) -> bytes:
    """MTH(D[start:end]) from the complete subtrees' hashes (``subtrees_of``).

    Raises ``IntegrityError`` if one of them is missing.
    """
    if start == end:
        return hashlib.sha256(b"").digest()
    try:
        parts = [nodes[node] for node in subtrees_of(start, end)]
    except KeyError as exc:
        raise IntegrityError(f"the stored tree lacks the subtree {exc.args[0]}") from None
    result = parts[-1]
    for part in reversed(parts[:-1]):
        result = node_hash(part, result)
    return result


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose tree hashes make PATH(index, D[size]), in order."""
    if not 0 <= index < size:
        raise ValueError("leaf index outside the tree")
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    return ranges[::-1]


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose tree hashes make PROOF(old_size, D[new_size]), in order."""
    if not 0 < old_size <= new_size:
        raise ValueError("old tree size outside the tree")
    ranges: list[tuple[int, int]] = []
    start, end, m, complete = 0, new_size, old_size, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, complete = start + k, m - k, False
    if not complete:
        ranges.append((start, end))
    return ranges[::-1]


def left_siblings(index: int) -> list[Node]:
    """The complete subtrees that leaf ``index``, once appended, completes a parent with."""
    siblings: list[Node] = []
    level = 0
    while (index >> level) & 1:
        siblings.append((level, (index >> level) - 1))
        level += 1
    return siblings


def completed_nodes(index: int, leaf: bytes, siblings: Mapping[Node, bytes]) -> list[NodeHash]:
    """The complete subtrees (level >= 1) leaf ``index`` completes, with their hashes.

    ``siblings`` holds the hashes of ``left_siblings(index)``.
    """
    completed: list[NodeHash] = []
    current = leaf
    for level, sibling in left_siblings(index):
        current = node_hash(siblings[(level, sibling)], current)
        completed.append((level + 1, index >> (level + 1), current))
    return completed


def _check_hashes(*hashes: bytes) -> None:
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise IntegrityError("a Merkle hash is not 32 bytes")


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf hash) is leaf ``index`` of the tree with ``root``.

    RFC 9162 2.1.3.2. Raises ``IntegrityError`` if it is not.
    """
    _check_hashes(leaf, root, *proof)
    if not 0 <= index < tree_size or len(proof) > _MAX_PROOF_LENGTH:
        raise IntegrityError("inclusion proof does not verify (index outside the tree)")
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            raise IntegrityError("inclusion proof does not verify (too long)")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise IntegrityError("inclusion proof does not verify")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (``new_size``, ``new_root``) extends (``old_size``, ``old_root``).

    RFC 9162 2.1.4.2. Equal sizes need an empty proof and equal roots; an empty
    old tree is a prefix of everything. Raises ``IntegrityError`` otherwise.
    """
    _check_hashes(old_root, new_root, *proof)
    if old_size < 0 or old_size > new_size or len(proof) > _MAX_PROOF_LENGTH:
        raise IntegrityError("consistency proof does not verify (the tree shrank)")
    if old_size == new_size:
        if proof or old_root != new_root:
            raise IntegrityError("consistency proof does not verify (same size, other root)")
        return
    if old_size == 0:
        if proof:
            raise IntegrityError("consistency proof does not verify (proof from an empty tree)")
        return
    if not proof:
        raise IntegrityError("consistency proof does not verify (empty proof)")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise IntegrityError("consistency proof does not verify (too long)")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != old_root or sr != new_root:
        raise IntegrityError("consistency proof does not verify")
