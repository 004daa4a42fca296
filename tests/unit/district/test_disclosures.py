"""The record of disclosures (``rt_server.store.disclosures``, 34 CFR 99.32)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from protos.rt.v1 import common_pb2
from rt_client.errors import NotFound
from rt_server.store import disclosures


def test_disclosures(engine: Engine, student_id: str, inbound: str, now: dt.datetime) -> None:
    entry = disclosures.write_disclosure(
        engine,
        student_local_id=student_id,
        receiving_district="1964733",
        receiving_school="19647331932334",
        tables=[common_pb2.HIS, common_pb2.TST],
        request_id=inbound,
        acting_staff="registrar.a",
        now=now,
    )
    assert entry.student_name == "Nuñez, María José"
    assert entry.tables == ("TST", "HIS") and entry.disclosed_at == now
    assert entry.legal_basis.startswith("34 CFR 99.31(a)(2)")
    assert disclosures.list_disclosures(engine, student_id) == [entry]
    assert disclosures.list_disclosures(engine) == [entry]
    assert disclosures.list_disclosures(engine, "S404") == []
    with pytest.raises(NotFound):
        disclosures.write_disclosure(
            engine,
            student_local_id="S404",
            receiving_district="1964733",
            receiving_school="19647331932334",
            tables=["HIS"],
            request_id=inbound,
            acting_staff="registrar.a",
        )


def test_a_disclosure_with_counts_names_only_the_tables_sent(
    engine: Engine, student_id: str, inbound: str, now: dt.datetime
) -> None:
    entry = disclosures.write_disclosure(
        engine,
        student_local_id=student_id,
        receiving_district="1964733",
        receiving_school="19647331932334",
        counts={"IMM": 2, "HIS": 2, "TST": 0, "ENR": 1},
        request_id=inbound,
        acting_staff="registrar.a",
        now=now,
    )
    assert entry.tables == ("HIS", "ENR", "IMM")
    assert entry.counts == (("HIS", 2), ("ENR", 1), ("IMM", 2))
    assert disclosures.list_disclosures(engine, student_id) == [entry]
