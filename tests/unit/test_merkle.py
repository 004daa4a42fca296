"""rt_client.merkle against known answers from an independent implementation (tests/vectors)."""

from __future__ import annotations

import json
import pathlib

import pytest

from rt_client import merkle
from rt_client.errors import IntegrityError

_VECTORS = json.loads(
    (pathlib.Path(__file__).parents[1] / "vectors" / "merkle_rfc9162.json").read_text()
)
LEAVES = [bytes.fromhex(x) for x in _VECTORS["leaf_hashes"]]
ROOTS = {int(n): bytes.fromhex(r) for n, r in _VECTORS["roots"].items()}


def _hexes(xs: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in xs]


def test_leaf_hashes_and_roots_match_the_known_answers() -> None:
    data = [bytes.fromhex(x) for x in _VECTORS["leaves"]]
    assert [merkle.leaf_hash(d) for d in data] == LEAVES
    for n, root in ROOTS.items():
        assert merkle.root_hash(LEAVES[:n]) == root
    # RFC 6962's reference tree head for the 8 Certificate Transparency leaves.
    assert ROOTS[8].hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert merkle.root_hash([]).hex().startswith("e3b0c442")


def test_published_ct_consistency_proof_2_8() -> None:
    assert [p.hex()[:8] for p in merkle.consistency_proof(LEAVES[:8], 2)] == [
        "5f083f0a",
        "6b47aaf2",
    ]


@pytest.mark.parametrize("case", _VECTORS["inclusion"], ids=lambda c: f"{c['index']}-{c['size']}")
def test_inclusion_known_answers(case: dict[str, object]) -> None:
    index, size = int(case["index"]), int(case["size"])  # type: ignore[call-overload]
    proof = _hexes(case["proof"])  # type: ignore[arg-type]
    assert merkle.inclusion_proof(LEAVES[:size], index) == proof
    merkle.verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size])
    wrong_root = ROOTS[size + 1] if size + 1 in ROOTS else ROOTS[1]
    with pytest.raises(IntegrityError):
        merkle.verify_inclusion(LEAVES[index], index, size, proof, wrong_root)
    if size > 1:
        with pytest.raises(IntegrityError):
            merkle.verify_inclusion(LEAVES[index], index ^ 1, size, proof, ROOTS[size])
        with pytest.raises(IntegrityError):
            merkle.verify_inclusion(LEAVES[index], index, size, proof[:-1], ROOTS[size])
        tampered = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
        with pytest.raises(IntegrityError):
            merkle.verify_inclusion(LEAVES[index], index, size, tampered, ROOTS[size])


@pytest.mark.parametrize(
    "case", _VECTORS["consistency"], ids=lambda c: f"{c['old_size']}-{c['new_size']}"
)
def test_consistency_known_answers(case: dict[str, object]) -> None:
    old, new = int(case["old_size"]), int(case["new_size"])  # type: ignore[call-overload]
    proof = _hexes(case["proof"])  # type: ignore[arg-type]
    if old < new:
        assert merkle.consistency_proof(LEAVES[:new], old) == proof
    merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)
    if old < new:
        # A rewritten history: another old root, or the new tree's with another old size.
        other = ROOTS[old + 1]
        with pytest.raises(IntegrityError):
            merkle.verify_consistency(old, new, other, ROOTS[new], proof)
        with pytest.raises(IntegrityError):
            merkle.verify_consistency(
                old, new, ROOTS[old], other if old + 1 != new else ROOTS[1], proof
            )
        # The tree shrank (truncated log).
        with pytest.raises(IntegrityError):
            merkle.verify_consistency(new, old, ROOTS[new], ROOTS[old], proof)


def test_malformed_inputs_are_refused_not_crashed() -> None:
    with pytest.raises(IntegrityError):
        merkle.verify_inclusion(b"short", 0, 1, [], ROOTS[1])
    with pytest.raises(IntegrityError):
        merkle.verify_inclusion(LEAVES[0], 0, 1, [LEAVES[1]] * 200, ROOTS[1])
    with pytest.raises(IntegrityError):
        merkle.verify_consistency(3, 5, ROOTS[3], ROOTS[5], [])
    with pytest.raises(ValueError):
        merkle.inclusion_proof(LEAVES[:3], 3)
