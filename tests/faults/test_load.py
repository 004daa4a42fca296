"""Load: 200 concurrent requests from four requesting districts to one prior district.

Five ``rt serve`` processes. Every request is approved, delivered, imported
and completed; afterwards every transfer is checked to have happened exactly
once on both sides (one delivery, one disclosure, one import ledger, the rows
of each student equal to the prior district's, and nothing else). The prior
district accepts only a few calls at a time (``max_concurrent_rpcs``), so the
requesting districts' workers also meet RESOURCE_EXHAUSTED and back off.

The figures (transfers, rows, wall time, retries) are printed; ``pytest -s``
shows them.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select

from rt_server.core.tables import ALL_TABLES
from rt_server.store import students
from rt_server.store.engine import make_engine
from rt_server.store.schema import (
    DISCLOSURES,
    IMPORT_LEDGER,
    OUTBOX,
    RECORD_TABLES,
    REQUESTS,
    TRANSFER_CHUNKS,
    create_schema,
)
from scripts import samples
from tests.faults.conftest import Cluster, add_new_student, approve, create_request, import_records
from tests.harness import wait_for
from tests.harness.processes import DistrictProcess
from tests.harness.world import PRIOR, PRIOR_SCHOOL

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

T = TypeVar("T")

REQUESTERS = [
    ("3768338", "37683383732997"),
    ("0161192", "01611920130229"),
    ("3066464", "30664643030004"),
    ("4369666", "43696664331006"),
]
PER_DISTRICT = 50
ROWS_PER_TABLE = 2  # small per student: the load is in the number of transfers
LOAD_TIMEOUT = 150.0


def ssid_of(i: int) -> str:
    return str(1_000_000_000 + i)


def in_parallel(work: Callable[[Any], T], items: Iterable[Any], threads: int = 16) -> list[T]:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(work, items))


def seed_prior(prior: DistrictProcess, count: int) -> int:
    """``count`` students (A0001 ...) with a few rows in every table; returns the rows."""
    engine = make_engine(prior.config.database_url)
    total = 0
    try:
        create_schema(engine)
        for i in range(count):
            rng = random.Random(i)
            records = samples.sample_records(rng, dict.fromkeys(ALL_TABLES, ROWS_PER_TABLE))
            with engine.begin() as conn:
                students.add_student(
                    conn,
                    {
                        "local_id": f"A{i:04d}", "ssid": ssid_of(i),
                        "legal_first_name": "Student", "legal_last_name": f"Number {i}",
                        "birth_date": "2010-01-01", "gender": "X", "school": prior.school,
                    },
                    actor="seed",
                )  # fmt: skip
                for code, rows in records.items():
                    conn.execute(
                        RECORD_TABLES[code].insert(),
                        [{**r, "PID": f"A{i:04d}", "SRC": "SIS"} for r in rows],
                    )
                    total += len(rows)
    finally:
        engine.dispose()
    return total


def statuses(district: DistrictProcess, direction: str) -> dict[str, int]:
    rows = district.rows(
        select(REQUESTS.c.status, func.count())
        .where(REQUESTS.c.direction == direction)
        .group_by(REQUESTS.c.status)
    )
    return {status: n for status, n in rows}


def test_200_concurrent_requests_to_one_prior_district_each_complete_exactly_once(
    cluster: Cluster,
) -> None:
    total = len(REQUESTERS) * PER_DISTRICT
    prior = cluster.district(PRIOR, PRIOR_SCHOOL, max_concurrent_rpcs=8)
    news = [cluster.district(code, school) for code, school in REQUESTERS]
    rows_seeded = seed_prior(prior, total)
    for district in (prior, *news):
        district.start(wait=False)
    for district in (prior, *news):
        district.wait_ready()

    # Student i moved to requester i % 4, where they are enrolled as N<i>.
    def mover(i: int) -> tuple[DistrictProcess, str, str]:
        return news[i % len(news)], f"N{i:04d}", f"A{i:04d}"

    in_parallel(lambda i: add_new_student(mover(i)[0], mover(i)[1], ssid_of(i)), range(total))

    began = time.monotonic()
    request_ids = in_parallel(
        lambda i: create_request(mover(i)[0], mover(i)[1], PRIOR_SCHOOL), range(total), threads=32
    )
    created = time.monotonic()
    wait_for(
        "every request to reach the prior district",
        lambda: statuses(prior, "INBOUND").get("PENDING") == total,
        LOAD_TIMEOUT,
    )
    in_parallel(lambda i: approve(prior, request_ids[i], mover(i)[2]), range(total))
    approved = time.monotonic()
    for district in news:
        wait_for(
            f"every transfer to arrive at {district.code}",
            lambda d=district: statuses(d, "OUTBOUND").get("DATA_RECEIVED") == PER_DISTRICT,
            LOAD_TIMEOUT,
        )
    delivered = time.monotonic()
    results = in_parallel(lambda i: import_records(mover(i)[0], request_ids[i]), range(total), 8)
    wait_for(
        "every request to be COMPLETE at the prior district",
        lambda: statuses(prior, "INBOUND").get("COMPLETE") == total,
        LOAD_TIMEOUT,
    )
    finished = time.monotonic()

    # --- exactly once, on both sides ---------------------------------------------------
    assert statuses(prior, "INBOUND") == {"COMPLETE": total}
    deliveries = prior.rows(
        select(OUTBOX.c.status, func.count())
        .where(OUTBOX.c.kind == "delivery")
        .group_by(OUTBOX.c.status)
    )
    assert deliveries == [("DONE", total)]
    disclosures = prior.rows(
        select(DISCLOSURES.c.request_id, func.count()).group_by(DISCLOSURES.c.request_id)
    )
    assert sorted(disclosures) == sorted((r, 1) for r in request_ids)
    assert prior.scalar(select(func.count()).select_from(TRANSFER_CHUNKS)) == 0  # spools gone

    assert not any(r.already_imported for r in results)
    imported_rows = sum(c.rows for r in results for c in r.imported)
    assert imported_rows == rows_seeded
    for district in news:
        assert statuses(district, "OUTBOUND") == {"IMPORTED": PER_DISTRICT}
        assert (
            district.scalar(
                select(func.count())
                .select_from(IMPORT_LEDGER)
                .where(IMPORT_LEDGER.c.table_code == "*")
            )
            == PER_DISTRICT
        )
        held = sum(
            district.scalar(select(func.count()).select_from(RECORD_TABLES[code]))
            for code in ALL_TABLES
        )
        assert held == rows_seeded // len(news)
    for i in range(total):
        district, new_id, prior_id = mover(i)
        assert district.record_rows(new_id) == prior.record_rows(prior_id), (new_id, prior_id)

    # --- the figures ---------------------------------------------------------------
    busy = sum(
        len(re.findall(r"attempt \d+ failed \(the other district could not be reached "
                       r"\(RESOURCE_EXHAUSTED\)", d.log()))
        for d in (prior, *news)
    )  # fmt: skip
    retries = sum(len(re.findall(r"attempt \d+ failed", d.log())) for d in (prior, *news))
    print(
        f"\nload: {total} transfers from {len(news)} districts to 1, {imported_rows} rows "
        f"({ROWS_PER_TABLE} per table per student); wall {finished - began:.1f} s "
        f"(requests {created - began:.1f} s, approvals done at {approved - began:.1f} s, "
        f"all delivered at {delivered - began:.1f} s, imported and complete at "
        f"{finished - began:.1f} s); {retries} send retries, {busy} of them RESOURCE_EXHAUSTED"
    )
