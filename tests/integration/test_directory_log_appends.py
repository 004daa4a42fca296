"""Appends to the directory log: concurrent ones, and the stored tree proofs are made from.

Every entry version the registry signs takes the next leaf of the log in the
same transaction. Districts that update their entries (or enroll) at the same
moment must each get a leaf of their own: none of the requests fails, the
leaves are 0..n-1 without a gap, and the log audits clean (real registry,
real mTLS, SQLite and PostgreSQL). Each append also stores the complete
subtrees it completes, so tree heads and proofs cost O(log n) stored hashes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.home import CONFIG_FILE, load_keys
from registry.store import RegistryStore, log_leaves, log_nodes
from registry.tlog import DirectoryLog, append_entry
from rt_client import merkle
from rt_client.checkpoint import open_checkpoint
from rt_client.config import load_registry_config
from rt_client.directory import verify_entry
from rt_client.rotation import update_district_entry
from tests._databases import Databases
from tests.harness.world import EnrolledDistrict, World

_T = TypeVar("_T")
CODES = [f"{1000000 + 1111 * i}" for i in range(1, 9)]


def _all_at_once(work: list[Callable[[], _T]]) -> list[_T]:
    start = threading.Barrier(len(work))

    def run(job: Callable[[], _T]) -> _T:
        start.wait()
        return job()

    with ThreadPoolExecutor(len(work)) as pool:
        return list(pool.map(run, work))


def _leaves(world: World) -> list[tuple[int, str, int]]:
    """The log's leaves (index, district, version), after ``rt-registry log verify``'s audit."""
    config = load_registry_config(world.registry.home / CONFIG_FILE)
    keys = load_keys(config)
    store = RegistryStore.open(config.database_url)
    try:
        with store.transaction() as tx:
            report = DirectoryLog(keys.signing_key).audit(tx)
            assert report.ok, report.problems
            return [(i, code, v) for i, code, v, _, _ in tx.logged_entries()]
    finally:
        store.close()


def test_districts_updating_their_entries_at_once_each_get_a_leaf(harness: World) -> None:
    districts = [harness.enroll(code) for code in CODES]

    def update(d: EnrolledDistrict) -> Callable[[], int]:
        def go() -> int:
            identity = update_district_entry(
                d.config, rotate_hpke_key=True, clock=harness.registry.clock
            )
            return verify_entry(
                identity.entry, harness.registry.signing_key, harness.registry.clock()
            ).version

        return go

    for _ in range(3):
        versions = _all_at_once([update(d) for d in districts])
        assert len(set(versions)) == 1
    leaves = _leaves(harness)
    assert [i for i, _, _ in leaves] == list(range(len(CODES) * 4))
    assert sorted((c, v) for _, c, v in leaves) == sorted(
        (c, v) for c in CODES for v in range(1, 5)
    )


def test_districts_enrolling_at_once_each_get_a_leaf(tmp_path: Path, databases: Databases) -> None:
    # All from one address: the enrollment port's share per caller must admit them all.
    settings = {"database_url": databases.url("registry")} if databases.postgres else {}
    world = World.start(tmp_path, databases, enroll_max_concurrent_rpcs=4 * len(CODES), **settings)
    try:
        enrolled = _all_at_once([lambda c=code: world.enroll(c) for code in CODES])
        assert sorted(d.code for d in enrolled) == CODES
        leaves = _leaves(world)
    finally:
        world.close()
    assert [i for i, _, _ in leaves] == list(range(len(CODES)))
    assert sorted(c for _, c, _ in leaves) == CODES


# --- proofs from stored complete subtrees -----------------------------------------------------

SIZE = 600


def test_tree_heads_and_proofs_read_stored_subtrees_not_every_leaf(tmp_path: Path) -> None:
    """A proof needs O(log n) stored hashes: with every leaf but two garbled, all still verify.

    Were the tree recomputed from all leaf hashes (cost growing with the log),
    the root and proofs below would come out wrong. ``log verify`` still
    recomputes everything, and finds a garbled subtree.
    """
    store = RegistryStore.open(f"sqlite:///{tmp_path / 'registry.db'}")
    key = Ed25519PrivateKey.generate()
    log = DirectoryLog(key)
    bodies = [i.to_bytes(4, "big") for i in range(SIZE)]
    try:
        with store.transaction() as tx:
            for i, body in enumerate(bodies):
                append_entry(tx, f"{1000000 + i}", 1, body)
        leaves = [merkle.leaf_hash(b) for b in bodies]
        root = merkle.root_hash(leaves)
        with store.engine.begin() as conn:
            conn.execute(
                log_leaves.update()
                .where(log_leaves.c.leaf_index.not_in([4, 5]))
                .values(leaf_hash=b"\xee" * 32)
            )
        with store.transaction() as tx:
            checkpoint = open_checkpoint(log.checkpoint(tx), log.verifier)
            assert (checkpoint.size, checkpoint.root_hash) == (SIZE, root)
            index, path = log.inclusion(tx, "1000005", 1, SIZE)
            merkle.verify_inclusion(leaves[5], index, SIZE, path, root)
            old_root = merkle.root_hash(leaves[:250])
            proof = log.consistency(tx, 250, SIZE)
            merkle.verify_consistency(250, SIZE, old_root, root, proof)
            assert len(path) <= 10 and len(proof) <= 2 * 10
        with store.engine.begin() as conn:
            conn.execute(
                log_nodes.update()
                .where(log_nodes.c.level == 3, log_nodes.c.node_index == 7)
                .values(node_hash=b"\xee" * 32)
            )
        with store.transaction() as tx:
            problems = log.audit(tx).problems
        assert "stored subtree (3, 7) does not hash the leaves under it" in problems
    finally:
        store.close()
