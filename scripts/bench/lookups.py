"""``registry_lookups_per_s``: LookupDistrict against a registry holding 1,000 districts.

California has about 1,000 districts. They are written straight into the
running registry's database through its own store and entry signer (one
transaction: each a registered, active district with a signed directory entry,
the prior district's keys standing in for theirs), which takes a second or
two, instead of 1,000 enrollments. Then a client with the prior district's
certificate calls ``LookupDistrict`` over mutual TLS, for districts drawn at
random, from a few threads at once; every answer is checked to be the entry
of the district asked for.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

from protos.rt.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from registry.entries import EntrySigner, parse_stored
from registry.home import open_registry
from registry.store import STATUS_ACTIVE, RegistryStore
from rt_client.config import load_config
from rt_client.directory import registry_channel, utc_now
from rt_client.identity import load_identity
from scripts.bench.cluster import PRIOR_CODE, BenchError, Cluster

FIRST_CODE = 9_000_000  # 7-digit codes no real county uses in the benchmark


def register_districts(cluster: Cluster, count: int) -> list[str]:
    """Add ``count`` active districts with signed entries; returns their codes."""
    config, _service, keys = open_registry(cluster.work / "registry")
    store = RegistryStore.open(config.database_url)
    signer = EntrySigner(keys.signing_key, timedelta(days=config.entry_validity_days), utc_now)
    now = utc_now()
    codes = [f"{FIRST_CODE + i:07d}" for i in range(count)]
    try:
        with store.transaction() as tx:
            row = tx.current_entry(PRIOR_CODE)
            if row is None:
                raise BenchError("the prior district has no directory entry")
            template = parse_stored(row)
            for i, code in enumerate(codes):
                endpoints = (f"d{code}.bench.invalid:7443",)
                tx.add_district(code, f"Bench District {i}", endpoints, "", [], now)
                entry = replace(
                    template, district_code=code, name=f"Bench District {i}", schools=(),
                    endpoints=endpoints, version=1, issued_at=now, expires_at=signer.expiry(now),
                )  # fmt: skip
                signer.store(tx, entry)
                tx.set_district_state(code, status=STATUS_ACTIVE)
    finally:
        store.close()
    return codes


def registry_lookups(
    cluster: Cluster, districts: int, lookups: int, threads: int = 4
) -> dict[str, Any]:
    assert cluster.prior is not None
    t = time.monotonic()
    codes = register_districts(cluster, districts)
    register_s = time.monotonic() - t
    district = load_config(cluster.prior.config)
    identity = load_identity(district.data_dir)
    channel = registry_channel(district.registry_address, identity.tls)
    stub = registry_pb2_grpc.RegistryStub(channel)
    errors: list[str] = []

    def look_up(n: int, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(n):
            code = rng.choice(codes)
            signed = stub.LookupDistrict(
                registry_pb2.LookupDistrictRequest(district_code=code), timeout=10
            )
            entry = common_pb2.DirectoryEntry.FromString(signed.body)
            if entry.district_code != code:
                errors.append(f"asked for {code}, got {entry.district_code}")

    try:
        look_up(20, 0)  # warm up: the connection, the registry's caches
        per_thread = max(1, lookups // threads)
        workers = [
            threading.Thread(target=look_up, args=(per_thread, i + 1)) for i in range(threads)
        ]
        t = time.monotonic()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.monotonic() - t
    finally:
        channel.close()
    if errors:
        raise BenchError(f"LookupDistrict answered wrongly: {errors[0]}")
    return {
        "scenario": "registry_lookups",
        "districts": districts + 2,
        "lookups": per_thread * threads,
        "threads": threads,
        "register_s": register_s,
        "wall_s": wall,
        "registry_lookups_per_s": per_thread * threads / wall,
    }
