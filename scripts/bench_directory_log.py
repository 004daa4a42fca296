"""Time the directory log's proofs at growing sizes (SQLite, a throwaway file).

    PYTHONPATH=. python scripts/bench_directory_log.py 1000 10000 100000

Appends n entry leaves through ``registry.tlog.append_entry`` in one
transaction, then prints the best of five: an inclusion proof, a consistency
proof, and signing a fresh checkpoint (root + signature). With the stored
complete subtrees these stay flat as n grows.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.store import RegistryStore, StoreTransaction, log_checkpoints
from registry.tlog import DirectoryLog, append_entry


def _best_ms(store: RegistryStore, work: Callable[[StoreTransaction], object]) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        with store.transaction() as tx:
            work(tx)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def bench(n: int) -> str:
    with tempfile.TemporaryDirectory() as folder:
        store = RegistryStore.open(f"sqlite:///{Path(folder) / 'registry.db'}")
        try:
            start = time.perf_counter()
            with store.transaction() as tx:
                for i in range(n):
                    append_entry(tx, f"{i:07d}", 1, i.to_bytes(8, "big"))
            append = (time.perf_counter() - start) / n * 1000
            log = DirectoryLog(Ed25519PrivateKey.generate())

            def checkpoint(tx: StoreTransaction) -> bytes:
                tx._conn.execute(sa.delete(log_checkpoints))  # sign a fresh one each time
                return log.checkpoint(tx)

            inclusion = _best_ms(store, lambda tx: log.inclusion(tx, f"{n // 2 + 1:07d}", 1, n))
            consistency = _best_ms(store, lambda tx: log.consistency(tx, n // 3, n))
            signing = _best_ms(store, checkpoint)
        finally:
            store.close()
    return (
        f"n={n}: append {append:.2f} ms/leaf, inclusion {inclusion:.2f} ms, "
        f"consistency {consistency:.2f} ms, checkpoint {signing:.2f} ms"
    )


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["1000", "10000"]:
        print(bench(int(arg)), flush=True)
