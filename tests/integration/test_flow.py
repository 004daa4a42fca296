"""The whole flow between two real district servers and a real registry.

District A (``PRIOR``) holds the student's records; district B (``NEW``) asks
for them. Both servers run in-process with the real peer gate over mutual TLS,
real databases and the real delivery worker (the ``pair`` and ``districts``
fixtures of the integration conftest, over ``tests.harness``); the tests talk
to them through their registrar services (Unix sockets), as the ``rt`` CLI does,
with the helpers of ``tests.harness.flow``.

Every refusal is checked twice: the status code, and that neither district's
database changed (``snapshot`` reads every table through the district's own
engine). Asynchronous effects are awaited by polling with a bounded deadline.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from protos.rt.v1 import common_pb2, registrar_pb2
from rt_client.crypto import envelope
from rt_server.core.tables import ALL_TABLES, TABLES
from rt_server.flows import requester, responder
from rt_server.store.schema import (
    DISCLOSURES,
    IMPORT_LEDGER,
    METADATA,
    OUTBOX,
    TRANSFER_CHUNKS,
    TRANSFERS,
)
from scripts import samples
from tests.harness.flow import (
    FIRST,
    INJECTION,
    LAST,
    RPC_TIMEOUT,
    SSID,
    WAIT_SECONDS,
    Code,
    Status,
    add_student,
    approve,
    assert_unchanged,
    count,
    counts,
    create_request,
    data_columns,
    get,
    import_,
    messages,
    refused,
    review,
    rows_of,
    settle,
    small_records,
    snapshot,
    wait_status,
    wait_until,
)
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR, PRIOR_SCHOOL, Pair, Side

# DESIGN.md section 4, step 5 (34 CFR 99.31(a)(2), recorded per 99.32).
LEGAL_BASIS = "99.31(a)(2) transfer to a school where the student seeks to enroll"


# --- hand-made rows ------------------------------------------------------------------------------


def edge_rows() -> dict[str, list[dict[str, Any]]]:
    """Hand-made rows that stress the round trip: Unicode, quotes, SQL, "" vs NULL,
    zero and false vs NULL, 2.5 vs 2.50, leap days, int32 bounds."""
    d = dt.date
    # fmt: off
    return {
        "TST": [
            {"ID": "O'Brien-T", "PT": 0, "TA": "Nuñez 2024", "TD": d(2020, 2, 29), "GR": 0,
             "TY": "", "SS": None, "PL": "Ñ", "PC": 0, "SRC": "SIS"},
            {"ID": "Ünïcödé", "PT": -1, "TA": "", "TD": None, "GR": None, "TY": None,
             "SS": 2147483647, "PL": None, "PC": None, "SRC": ""},
        ],
        "CST": [
            {"ID": "CST-ÉDGE", "SD": INJECTION, "TA": "2019-20 SPR", "TD": None,
             "SC": Decimal("2.5"), "PL": "", "SRC": "SIS"},
            {"ID": "CST-ÉDGE", "SD": "O'Brien \"q\" %_", "TA": "2019-20 SPR", "TD": d(2000, 1, 1),
             "SC": Decimal("-0.01"), "PL": None, "SRC": None},
        ],
        "CTS": [
            {"NM": "AP ESPAÑOL", "DT": d(2023, 5, 12), "TTL": 0, "ST1": "Nuñez", "SC1": -1,
             "ST2": "", "SC2": None, "ST13": "O'Brien", "SC13": 2147483647, "SRC": "SIS"},
        ],
        "HIS": [
            {"YR": "2099-2100", "GR": 9, "TE": "S", "CN": "X'1", "CO": INJECTION, "MK": "A+",
             "CR": Decimal("2.5"), "CC": Decimal("0"), "ST": PRIOR_SCHOOL, "CI": "", "RT": None,
             "DC": d(2000, 1, 1), "CH": "", "PF": None, "SRC": "SIS"},
            {"YR": "2099-2100", "GR": 9, "TE": "F", "CN": "ES-1",
             "CO": "Español — Nuñez O'Brien 日本語 😀",
             "MK": "", "CR": Decimal("9999.99"), "CC": None, "ST": "", "CI": None, "RT": "R",
             "DC": None, "CH": None, "PF": "", "SRC": "SIS"},
        ],
        "ENR": [
            {"SC": PRIOR_SCHOOL, "YR": "1999-2000", "GR": -1, "ED": d(1999, 8, 15), "LD": None,
             "ER": "", "SRC": "SIS"},
        ],
        "IMM": [
            {"VC": "Ñ'; --", "DN": None, "DT": d(2010, 1, 1), "SRC": "SIS"},
            {"VC": "", "DN": 0, "DT": d(2012, 12, 31), "SRC": None},
        ],
        "LAC": [
            {"L1": "", "L2": None, "L3": "日本", "AC": "O'Brien", "AD": d(2011, 3, 3),
             "LV": "Robert'); DROP", "SRC": "SIS"},
        ],
        "PFT": [
            {"TD": d(2024, 2, 29), "CP": "Nuñez \"quoted\" %_\\", "SC": Decimal("2.5"), "HF": False,
             "GR": None, "SRC": "SIS"},
            {"TD": d(2024, 2, 29), "CP": "", "SC": None, "HF": None, "GR": 0, "SRC": "SIS"},
        ],
    }
    # fmt: on


# --- 1. the whole flow, every table -------------------------------------------------------


def test_full_flow_every_table_round_trips(districts: Pair) -> None:
    p = districts
    records = samples.sample_records(random.Random(7))
    for code, rows in edge_rows().items():
        records[code].extend(rows)
    add_student(p.a, "A1", records, actor="alice")
    add_student(p.a, "A2", small_records(8), ssid="2234567890", first="Other", last="Student")
    add_student(p.b, "B1", actor="bob")
    a_rows = {code: rows_of(p.a, code, "A1") for code in ALL_TABLES}
    assert {code: len(rows) for code, rows in a_rows.items()} == {
        c: len(r) for c, r in records.items()
    }
    b_student_before = snapshot(p.b)["students"]

    request_id = create_request(p)
    candidates = p.a.rpc.MatchStudent(
        registrar_pb2.RequestRef(request_id=request_id), timeout=RPC_TIMEOUT
    )
    best = candidates.candidates[0]
    assert (best.student.local_id, best.exact, best.confidence) == ("A1", True, 100)

    received = approve(p, request_id)
    assert counts(received.received) == {code: len(records[code]) for code in ALL_TABLES}
    assert sorted(received.tables) == sorted(TABLES[c].enum for c in ALL_TABLES)

    tables = review(p, request_id)
    assert {
        common_pb2.TableCode.Name(t): (r.new_rows, r.duplicate_rows, r.conflict_rows)
        for t, r in tables.items()
    } == {code: (len(records[code]), 0, 0) for code in ALL_TABLES}
    result = import_(p, request_id)
    assert not result.already_imported
    assert counts(result.imported) == {code: len(records[code]) for code in ALL_TABLES}
    assert counts(result.skipped) == {}
    wait_status(p.b, request_id, Status.IMPORTED)
    wait_status(p.a, request_id, Status.COMPLETE)

    for code in ALL_TABLES:
        imported = rows_of(p.b, code, "B1")
        assert [r["SQ"] for r in imported] == list(range(1, len(a_rows[code]) + 1)), code
        assert {r["SRC"] for r in imported} == {"RT"}, code
        assert {r["PID"] for r in imported} == {"B1"}, code
        for mine, theirs in zip(imported, a_rows[code], strict=True):
            assert data_columns(mine) == data_columns(theirs), code
            for column, value in data_columns(theirs).items():  # same types too: "" is not NULL
                assert type(mine[column]) is type(value), (code, column)
    # Nothing else moved: A still holds exactly what it held, B's student is as enrolled.
    assert {code: rows_of(p.a, code, "A1") for code in ALL_TABLES} == a_rows
    assert snapshot(p.b)["students"] == b_student_before
    assert rows_of(p.b, "HIS", "A1") == []


# --- 2. rejection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "text"),
    [(common_pb2.RECORDS_WITHHELD, ""), (common_pb2.OTHER, "Legal hold; call Ms. O'Brien — ¿sí?")],
)
def test_rejection_with_coded_reason(districts: Pair, reason: int, text: str) -> None:
    p = districts
    add_student(p.a, "A1", small_records(1))
    add_student(p.b, "B1")
    request_id = create_request(p)
    settle(p.a, p.b)

    before_a, before_b = snapshot(p.a), snapshot(p.b)
    reject = p.a.rpc.RejectRequest
    details = refused(
        reject,
        registrar_pb2.RejectRequestRequest(request_id=request_id, actor="alice"),
        Code.INVALID_ARGUMENT,
    )
    assert "reason" in details
    details = refused(
        reject,
        registrar_pb2.RejectRequestRequest(
            request_id=request_id, reason=common_pb2.OTHER, text="  ", actor="alice"
        ),
        Code.INVALID_ARGUMENT,
    )
    assert "explanation" in details
    refused(
        reject,
        registrar_pb2.RejectRequestRequest(request_id=request_id, reason=99, actor="alice"),
        Code.INVALID_ARGUMENT,
    )
    assert_unchanged(before_a, snapshot(p.a))
    assert_unchanged(before_b, snapshot(p.b))

    detail = reject(
        registrar_pb2.RejectRequestRequest(
            request_id=request_id, reason=reason, text=text, actor="alice"
        ),
        timeout=RPC_TIMEOUT,
    )
    assert detail.summary.status == Status.REJECTED
    seen = wait_status(p.b, request_id, Status.REJECTED)
    settle(p.a, p.b)
    assert seen.reject_reason == reason
    assert seen.reject_text == text
    b_log = " | ".join(m.body for m in messages(p.b, request_id) if m.system)
    words = common_pb2.RejectReason.Name(reason).replace("_", " ").lower()  # not the enum name
    assert f"Rejected by alice: {words}" in b_log, b_log
    assert not seen.approved and not seen.transfer_id and not seen.received
    assert get(p.a, request_id).summary.status == Status.REJECTED
    # No delivery, no disclosure, anywhere.
    for side in (p.a, p.b):
        assert count(side, TRANSFERS) == 0 and count(side, TRANSFER_CHUNKS) == 0
        assert count(side, DISCLOSURES) == 0
        assert count(side, OUTBOX, OUTBOX.c.kind == "delivery") == 0
    assert not p.a.rpc.ListDisclosures(
        registrar_pb2.ListDisclosuresRequest(), timeout=RPC_TIMEOUT
    ).disclosures
    assert rows_of(p.b, "HIS", "B1") == []


# --- 3. a student the prior district does not have ------------------------------------------


def test_request_for_unknown_student(districts: Pair) -> None:
    p = districts
    add_student(
        p.a,
        "A1",
        small_records(1),
        ssid="1111111111",
        first="Zoë",
        last="O'Brien",
        birth="2009-12-01",
    )
    add_student(p.b, "B1", ssid="9999999999", first="Ximena", last="Washington", birth="2012-06-30")
    request_id = create_request(p)
    settle(p.a, p.b)

    found = p.a.rpc.MatchStudent(
        registrar_pb2.RequestRef(request_id=request_id), timeout=RPC_TIMEOUT
    )
    assert list(found.candidates) == []

    before_a, before_b = snapshot(p.a), snapshot(p.b)
    details = refused(
        p.a.rpc.ApproveRequest,
        registrar_pb2.ApproveRequestRequest(request_id=request_id, actor="alice"),
        Code.INVALID_ARGUMENT,
    )
    assert "--student" in details
    details = refused(
        p.a.rpc.ApproveRequest,
        registrar_pb2.ApproveRequestRequest(
            request_id=request_id, student_local_id="NOPE", actor="alice"
        ),
        Code.NOT_FOUND,
    )
    assert "no student" in details
    settle(p.a, p.b)
    assert_unchanged(before_a, snapshot(p.a))
    assert_unchanged(before_b, snapshot(p.b))
    assert get(p.a, request_id).summary.status == Status.PENDING
    assert not get(p.a, request_id).approved

    # The way out is a rejection, which B sees.
    p.a.rpc.RejectRequest(
        registrar_pb2.RejectRequestRequest(
            request_id=request_id, reason=common_pb2.STUDENT_NOT_FOUND, actor="alice"
        ),
        timeout=RPC_TIMEOUT,
    )
    assert (
        wait_status(p.b, request_id, Status.REJECTED).reject_reason == common_pb2.STUDENT_NOT_FOUND
    )


# --- 4. wrong status, unknown ids --------------------------------------------------------------


def test_decisions_and_imports_need_the_right_status(districts: Pair) -> None:
    p = districts
    add_student(p.a, "A1", small_records(2))
    add_student(p.b, "B1")
    rejected = create_request(p)
    approved = create_request(p)
    settle(p.a, p.b)

    # B cannot review or import before the records arrive.
    before_a, before_b = snapshot(p.a), snapshot(p.b)
    ref = registrar_pb2.RequestRef(request_id=approved)
    refused(
        p.b.rpc.ImportTransfer,
        registrar_pb2.ImportTransferRequest(request_id=approved, actor="bob"),
        Code.FAILED_PRECONDITION,
    )
    refused(p.b.rpc.ReviewTransfer, ref, Code.FAILED_PRECONDITION)
    assert_unchanged(before_b, snapshot(p.b))

    p.a.rpc.RejectRequest(
        registrar_pb2.RejectRequestRequest(
            request_id=rejected, reason=common_pb2.DUPLICATE_REQUEST, actor="alice"
        ),
        timeout=RPC_TIMEOUT,
    )
    wait_status(p.b, rejected, Status.REJECTED)
    approve(p, approved)

    before_a, before_b = snapshot(p.a), snapshot(p.b)
    for request_id in (rejected, approved):  # decided already: REJECTED, SENT
        details = refused(
            p.a.rpc.ApproveRequest,
            registrar_pb2.ApproveRequestRequest(
                request_id=request_id, student_local_id="A1", actor="alice"
            ),
            Code.FAILED_PRECONDITION,
        )
        assert "already" in details
        refused(
            p.a.rpc.RejectRequest,
            registrar_pb2.RejectRequestRequest(
                request_id=request_id, reason=common_pb2.OTHER, text="x", actor="alice"
            ),
            Code.FAILED_PRECONDITION,
        )
    refused(
        p.b.rpc.ImportTransfer,
        registrar_pb2.ImportTransferRequest(request_id=rejected, actor="bob"),
        Code.FAILED_PRECONDITION,
    )
    refused(
        p.b.rpc.ReviewTransfer,
        registrar_pb2.RequestRef(request_id=rejected),
        Code.FAILED_PRECONDITION,
    )
    # Each side's requests are found only where they belong: no importing at A, no approving at B.
    refused(
        p.a.rpc.ImportTransfer,
        registrar_pb2.ImportTransferRequest(request_id=approved, actor="alice"),
        Code.NOT_FOUND,
    )
    refused(
        p.b.rpc.ApproveRequest,
        registrar_pb2.ApproveRequestRequest(request_id=approved, actor="bob"),
        Code.FAILED_PRECONDITION,
    )
    refused(p.b.rpc.MatchStudent, registrar_pb2.RequestRef(request_id=approved), Code.NOT_FOUND)
    assert_unchanged(before_a, snapshot(p.a))
    assert_unchanged(before_b, snapshot(p.b))

    # Unknown request ids, on every method that takes one.
    unknown = "00000000-0000-4000-8000-000000000000"
    ref = registrar_pb2.RequestRef(request_id=unknown, actor="x")
    for side in (p.a, p.b):
        rpc = side.rpc
        for call, request in [
            (rpc.GetRequest, ref),
            (rpc.MatchStudent, ref),
            (
                rpc.ApproveRequest,
                registrar_pb2.ApproveRequestRequest(
                    request_id=unknown, student_local_id="A1", actor="x"
                ),
            ),
            (
                rpc.RejectRequest,
                registrar_pb2.RejectRequestRequest(
                    request_id=unknown, reason=common_pb2.OTHER, text="x", actor="x"
                ),
            ),
            (rpc.RetryRequest, ref),
            (rpc.ReviewTransfer, ref),
            (
                rpc.ImportTransfer,
                registrar_pb2.ImportTransferRequest(request_id=unknown, actor="x"),
            ),
            (
                rpc.PostMessage,
                registrar_pb2.PostMessageRequest(request_id=unknown, body="hello", actor="x"),
            ),
            (rpc.ListMessages, ref),
        ]:
            refused(call, request, Code.NOT_FOUND)
    settle(p.a, p.b)
    assert_unchanged(before_a, snapshot(p.a))
    assert_unchanged(before_b, snapshot(p.b))


# --- 5. duplicates and conflicts ---------------------------------------------------------------


def test_review_classifies_and_import_takes_new_then_accepted(districts: Pair) -> None:
    p = districts
    records = small_records(5, n=5)
    records["HIS"][2]["CH"] = ""  # A says "", B holds NULL: a difference, not a duplicate
    add_student(p.a, "A1", records)

    def variant(code: str, i: int, **changes: Any) -> dict[str, Any]:
        return {**records[code][i], "SQ": None, "SRC": "LOCAL", **changes}

    held = {
        # HIS 0: the same data (SQ and SRC are bookkeeping; credits given as 5 vs 5.00)
        "HIS": [
            variant("HIS", 0, CR=records["HIS"][0]["CR"].normalize()),
            variant("HIS", 1, MK="Z"),
            variant("HIS", 2, CH=None),
        ],
        "TST": [variant("TST", 3)],
        "PFT": [variant("PFT", 0, SC=records["PFT"][0]["SC"] + Decimal("0.01")), variant("PFT", 4)],
        "IMM": [{"VC": "999", "DN": 1, "DT": dt.date(2001, 1, 1), "SRC": "LOCAL"}],  # ours only
    }
    expected_dup = {"HIS": {0}, "TST": {3}, "PFT": {4}}
    expected_conflict = {"HIS": {1: ("MK",), 2: ("CH",)}, "PFT": {0: ("SC",)}}
    add_student(p.b, "B1", held)
    b_held = {code: rows_of(p.b, code, "B1") for code in ALL_TABLES}

    first = create_request(p)
    approve(p, first)
    tables = review(p, first)
    for code in ALL_TABLES:
        t = tables[TABLES[code].enum]
        classes = {r.index: r.row_class for r in t.rows}
        dups = expected_dup.get(code, set())
        conflicts = expected_conflict.get(code, {})
        assert {i for i, c in classes.items() if c == registrar_pb2.DUPLICATE} == dups, code
        assert {i for i, c in classes.items() if c == registrar_pb2.CONFLICT} == set(conflicts), (
            code
        )
        assert (t.new_rows, t.duplicate_rows, t.conflict_rows) == (
            5 - len(dups) - len(conflicts),
            len(dups),
            len(conflicts),
        ), code
        for r in t.rows:
            if r.row_class == registrar_pb2.CONFLICT:
                assert tuple(r.differing_columns) == conflicts[r.index], (code, r.index)
            if r.row_class != registrar_pb2.NEW:
                # The review shows the row we hold next to the incoming one.
                assert len(getattr(r.existing, TABLES[code].batch_field)) == 1
                assert getattr(r.existing, TABLES[code].batch_field)[0].src == "LOCAL"

    # An accepted conflict that is not in the transfer: refused, nothing written.
    before = snapshot(p.b)
    refused(
        p.b.rpc.ImportTransfer,
        registrar_pb2.ImportTransferRequest(
            request_id=first,
            actor="bob",
            accept_conflicts=[registrar_pb2.RowRef(table=common_pb2.HIS, index=99)],
        ),
        Code.INVALID_ARGUMENT,
    )
    assert_unchanged(before, snapshot(p.b))

    # By default: NEW rows only.
    result = import_(p, first)
    new_counts = {
        code: 5 - len(expected_dup.get(code, ())) - len(expected_conflict.get(code, {}))
        for code in ALL_TABLES
    }
    assert counts(result.imported) == new_counts
    assert counts(result.skipped) == {c: 5 - n for c, n in new_counts.items() if n < 5}
    a_rows = {code: rows_of(p.a, code, "A1") for code in ALL_TABLES}
    for code in ALL_TABLES:
        now_held = rows_of(p.b, code, "B1")
        assert now_held[: len(b_held[code])] == b_held[code], code  # what B held is untouched
        added = now_held[len(b_held[code]) :]
        skipped = expected_dup.get(code, set()) | set(expected_conflict.get(code, {}))
        wanted = [r for i, r in enumerate(a_rows[code]) if i not in skipped]
        assert [data_columns(r) for r in added] == [data_columns(r) for r in wanted], code
        assert [r["SQ"] for r in added] == list(range(len(b_held[code]) + 1, len(now_held) + 1)), (
            code
        )
        assert {r["SRC"] for r in added} <= {"RT"}
    wait_status(p.a, first, Status.COMPLETE)
    settle(p.a, p.b)

    # A second import of the same transfer is a no-op, whatever it asks for.
    before_a, before_b = snapshot(p.a), snapshot(p.b)
    again = import_(p, first, accept_all_conflicts=True)
    assert again.already_imported
    assert counts(again.imported) == new_counts
    settle(p.a, p.b)
    assert_unchanged(before_a, snapshot(p.a))
    assert_unchanged(before_b, snapshot(p.b))

    # A second request: what was imported is now DUPLICATE; accept one of the conflicts.
    second = create_request(p)
    approve(p, second)
    tables = review(p, second)
    his = tables[common_pb2.HIS]
    assert (his.new_rows, his.duplicate_rows, his.conflict_rows) == (0, 3, 2)
    assert sum(t.new_rows for t in tables.values()) == 0
    before_his = rows_of(p.b, "HIS", "B1")
    # The review says, before the import, which row of ours accepting would replace.
    replaces = {r.index: r.replaces_sq for r in his.rows if r.row_class == registrar_pb2.CONFLICT}
    assert replaces == {1: b_held["HIS"][1]["SQ"], 2: b_held["HIS"][2]["SQ"]}
    result = import_(
        p, second, accept_conflicts=[registrar_pb2.RowRef(table=common_pb2.HIS, index=1)]
    )
    assert counts(result.imported) == {} and counts(result.replaced) == {"HIS": 1}
    # Our row (MK "Z") now holds the received values, in place: same SQ, same natural key,
    # source RT; no second row with that key, nothing else touched.
    after_his = rows_of(p.b, "HIS", "B1")
    assert len(after_his) == len(before_his)
    replaced_sq = b_held["HIS"][1]["SQ"]
    for old, new in zip(before_his, after_his, strict=True):
        if old["SQ"] != replaced_sq:
            assert new == old
    updated = next(r for r in after_his if r["SQ"] == replaced_sq)
    assert data_columns(updated) == data_columns(a_rows["HIS"][1])
    assert updated["SRC"] == "RT"
    # The old values are kept where the registrar and the auditors see them.
    kept = p.b.rpc.GetStudent(registrar_pb2.StudentRef(local_id="B1"), timeout=10).replaced
    assert len(kept) == 1 and kept[0].old.his[0].mk == "Z" and kept[0].old.his[0].sq == replaced_sq
    assert (kept[0].transfer_id, kept[0].row_index, kept[0].replaced_by) == (
        get(p.b, second).transfer_id,
        1,
        "bob",
    )
    assert rows_of(p.b, "PFT", "B1")[:2] == b_held["PFT"]  # the unaccepted conflict stays ours only
    # The accepted row now reviews as a DUPLICATE; importing again changes nothing.
    tables = review(p, second)
    assert {r.index: r.row_class for r in tables[common_pb2.HIS].rows}[1] == registrar_pb2.DUPLICATE
    wait_status(p.a, second, Status.COMPLETE)
    settle(p.a, p.b)
    before_b = snapshot(p.b)
    assert import_(p, second, accept_all_conflicts=True).already_imported
    assert_unchanged(before_b, snapshot(p.b))


# --- 6. nothing in the clear at rest -------------------------------------------------------------


def test_staged_transfer_holds_no_plaintext(districts: Pair, tmp_path: Path) -> None:
    p = districts
    marker = "ZQX-Mårker-7731"  # distinctive record values B has never held
    records = small_records(3)
    records["HIS"][0]["CO"] = f"{LAST} {SSID} {marker}"  # the name and SSID inside the records too
    records["CST"][0]["SD"] = INJECTION
    records["LAC"][0]["LV"] = "Élan-4242-ZQX"
    add_student(p.a, "A1", records)
    add_student(p.b, "B1")
    request_id = create_request(p)
    approve(p, request_id)
    review(p, request_id)  # review decrypts on the fly and must store nothing

    def encodings(text: str) -> list[bytes]:
        return [text.encode("utf-8"), text.encode("utf-16-le"), text.encode("utf-16-be")]

    record_values = [marker, INJECTION, "Élan-4242-ZQX", "4242-ZQX"]
    with p.b.engine.connect() as conn:
        staged = conn.execute(select(TRANSFERS)).all() + conn.execute(select(TRANSFER_CHUNKS)).all()
        everything = {t.name: conn.execute(select(t)).all() for t in METADATA.sorted_tables}
    assert staged, "the transfer should be staged"

    def values(rows: Sequence[Any]) -> list[bytes]:
        out = []
        for row in rows:
            for v in row:
                if isinstance(v, bytes | bytearray | memoryview):
                    out.append(bytes(v))
                elif v is not None:
                    out.append(str(v).encode("utf-8"))
        return out

    # The staged transfer: not the name, not the SSID, not a record value.
    for blob in values(staged):
        for needle in [LAST, SSID, *record_values]:
            for enc in encodings(needle):
                assert enc not in blob, needle
    # Anywhere in B's database (B holds the name and SSID itself: it enrolled the
    # student and signed the request), and in the raw database files.
    for name, rows in everything.items():
        for blob in values(rows):
            for needle in record_values:
                for enc in encodings(needle):
                    assert enc not in blob, (name, needle)
    if p.b.enrolled.config.database_url.startswith("sqlite:///"):
        # The file's bytes too, free pages and write-ahead log included.
        db_file = Path(p.b.enrolled.config.database_url.removeprefix("sqlite:///"))
        raw = b"".join(f.read_bytes() for f in db_file.parent.glob(db_file.name + "*"))
        assert len(raw) > 0
        for needle in record_values:
            for enc in encodings(needle):
                assert enc not in raw, needle
    assert count(p.b, IMPORT_LEDGER) == 0
    assert rows_of(p.b, "HIS", "B1") == []
    # A's spool (in its database) is gone once B's receipt verified; the sealed
    # transfer's record stays.
    assert count(p.a, TRANSFER_CHUNKS) == 0
    with p.a.engine.connect() as conn:
        sent = conn.execute(select(TRANSFERS.c.state, TRANSFERS.c.completed_at)).all()
    assert len(sent) == 1 and sent[0].state == "SEALED" and sent[0].completed_at is not None

    # And the transfer still imports: the ciphertext was kept intact.
    import_(p, request_id)
    assert any(marker in r["CO"] for r in rows_of(p.b, "HIS", "B1"))


# --- 7. the record of disclosure -----------------------------------------------------------------


def test_disclosure_is_recorded_when_sent(districts: Pair) -> None:
    p = districts
    add_student(p.a, "A1", small_records(4))
    add_student(p.a, "A2", small_records(5), ssid="2234567890", first="Other", last="Student")
    add_student(p.b, "B1")
    request_id = create_request(p)
    assert not p.a.rpc.ListDisclosures(
        registrar_pb2.ListDisclosuresRequest(), timeout=RPC_TIMEOUT
    ).disclosures

    started = dt.datetime.now(dt.UTC)
    approved_tables = [common_pb2.HIS, common_pb2.IMM, common_pb2.TST]
    received = approve(p, request_id, tables=approved_tables)
    finished = dt.datetime.now(dt.UTC)
    assert sorted(received.tables) == sorted(approved_tables)
    assert set(counts(received.received)) == {"TST", "HIS", "IMM"}

    listed = p.a.rpc.ListDisclosures(
        registrar_pb2.ListDisclosuresRequest(student_local_id="A1"), timeout=RPC_TIMEOUT
    )
    assert len(listed.disclosures) == 1
    x = listed.disclosures[0]
    assert x.student_local_id == "A1"
    assert LAST in x.student_name and FIRST in x.student_name
    assert (x.receiving_district, x.receiving_school) == (NEW, NEW_SCHOOL)
    assert sorted(x.tables) == sorted(approved_tables)
    assert started - dt.timedelta(seconds=1) <= x.disclosed_at.ToDatetime(tzinfo=dt.UTC) <= finished
    assert x.request_id == request_id
    assert LEGAL_BASIS in x.legal_basis  # cited in full: "34 CFR 99.31(a)(2) ..."
    assert x.acting_staff == "alice"
    assert not p.a.rpc.ListDisclosures(
        registrar_pb2.ListDisclosuresRequest(student_local_id="A2"), timeout=RPC_TIMEOUT
    ).disclosures
    every = p.a.rpc.ListDisclosures(registrar_pb2.ListDisclosuresRequest(), timeout=RPC_TIMEOUT)
    assert [d.request_id for d in every.disclosures] == [request_id]
    assert count(p.b, DISCLOSURES) == 0  # B disclosed nothing

    # The import (and A's COMPLETE) adds no second entry.
    import_(p, request_id)
    wait_status(p.a, request_id, Status.COMPLETE)
    assert count(p.a, DISCLOSURES) == 1


def test_disclosure_records_the_tables_and_rows_actually_sent(districts: Pair) -> None:
    """Issue 13 item 2: a transfer of HIS 2, ENR 1, IMM 2 was logged as all eight tables."""
    p = districts
    records = small_records(4)
    add_student(p.a, "A1", {"HIS": records["HIS"][:2], "ENR": records["ENR"][:1],
                            "IMM": records["IMM"][:2]})  # fmt: skip
    add_student(p.b, "B1")
    request_id = create_request(p)  # all eight tables asked for, and approved
    received = approve(p, request_id)
    assert len(received.tables) == 8
    listed = p.a.rpc.ListDisclosures(
        registrar_pb2.ListDisclosuresRequest(student_local_id="A1"), timeout=RPC_TIMEOUT
    ).disclosures
    assert len(listed) == 1
    assert list(listed[0].tables) == [common_pb2.HIS, common_pb2.ENR, common_pb2.IMM]
    assert counts(listed[0].counts) == {"HIS": 2, "ENR": 1, "IMM": 2}
    with p.a.engine.connect() as conn:
        stored = conn.execute(select(DISCLOSURES.c.tables, DISCLOSURES.c.table_counts)).all()
    assert [tuple(r) for r in stored] == [("HIS,ENR,IMM", "HIS=2,ENR=1,IMM=2")]


# --- 8. the thread -------------------------------------------------------------------------------


def test_thread_messages_and_status_log(districts: Pair) -> None:
    p = districts
    add_student(p.a, "A1", small_records(6))
    add_student(p.b, "B1")
    request_id = create_request(p)

    body = "¿Tienen el expediente de Nuñez? — O'Brien 😀"
    posted = p.b.rpc.PostMessage(
        registrar_pb2.PostMessageRequest(request_id=request_id, body=body, actor="bob"),
        timeout=RPC_TIMEOUT,
    )
    assert posted.message_id and posted.from_district == NEW
    at_a = wait_until(
        "B's message at A",
        lambda: [m for m in messages(p.a, request_id) if m.message_id == posted.message_id],
    )
    assert (at_a[0].body, at_a[0].author, at_a[0].from_district, at_a[0].system) == (
        body,
        "bob",
        NEW,
        False,
    )
    wait_until(
        "B's message acknowledged",
        lambda: [
            m
            for m in messages(p.b, request_id)
            if m.message_id == posted.message_id and m.delivered
        ],
    )

    reply = p.a.rpc.PostMessage(
        registrar_pb2.PostMessageRequest(
            request_id=request_id, body="Sí, enviando.", actor="alice"
        ),
        timeout=RPC_TIMEOUT,
    )
    at_b = wait_until(
        "A's reply at B",
        lambda: [m for m in messages(p.b, request_id) if m.message_id == reply.message_id],
    )
    assert (at_b[0].body, at_b[0].author, at_b[0].from_district) == (
        "Sí, enviando.",
        "alice",
        PRIOR,
    )

    settle(p.a, p.b)
    before_a, before_b = snapshot(p.a), snapshot(p.b)
    refused(
        p.b.rpc.PostMessage,
        registrar_pb2.PostMessageRequest(request_id=request_id, body="   ", actor="bob"),
        Code.INVALID_ARGUMENT,
    )
    refused(
        p.b.rpc.PostMessage,
        registrar_pb2.PostMessageRequest(request_id=request_id, body="x" * 4001, actor="bob"),
        Code.INVALID_ARGUMENT,
    )
    assert_unchanged(before_a, snapshot(p.a))
    assert_unchanged(before_b, snapshot(p.b))

    approve(p, request_id)
    import_(p, request_id)
    wait_status(p.a, request_id, Status.COMPLETE)

    # Each message exactly once on each side; status changes logged on both sides.
    for side in (p.a, p.b):
        thread = messages(side, request_id)
        mine = [m for m in thread if not m.system]
        assert sorted(m.message_id for m in mine) == sorted([posted.message_id, reply.message_id])
        assert all(m.delivered for m in mine)
        assert [m.sent_at.ToDatetime() for m in thread] == sorted(
            m.sent_at.ToDatetime() for m in thread
        )
    a_log = " | ".join(m.body for m in messages(p.a, request_id) if m.system)
    b_log = " | ".join(m.body for m in messages(p.b, request_id) if m.system)
    for words in (
        f"Request received from district {NEW}",
        "Approved by alice",
        "-> SENT",
        "-> COMPLETE",
    ):
        assert words in a_log, (words, a_log)
    for words in (
        "queued for district",
        "QUEUED -> PENDING",
        "Approved by alice",
        "-> DATA_RECEIVED",
        "-> IMPORTED",
    ):
        assert words in b_log, (words, b_log)
    # System messages carry no student data.
    for log in (a_log, b_log):
        assert LAST not in log and SSID not in log


# --- the prior district is down ------------------------------------------------------------------


def retried(side: Side, request_id: str, times: int) -> registrar_pb2.RequestDetail | None:
    detail = get(side, request_id)
    return detail if detail.attempts >= times else None


def test_request_waits_while_prior_district_is_down(pair: Pair) -> None:
    p = pair
    p.start(p.b)
    add_student(p.b, "B1")
    detail = p.b.rpc.CreateRequest(
        registrar_pb2.CreateRequestRequest(
            student_local_id="B1", prior_school=PRIOR_SCHOOL, actor="bob"
        ),
        timeout=RPC_TIMEOUT,
    )
    request_id = detail.summary.request_id
    assert detail.summary.status == Status.QUEUED, detail
    # The worker keeps trying, and the registrar can see it.
    waiting = wait_until("retries", lambda: retried(p.b, request_id, times=2))
    assert waiting.summary.status == Status.QUEUED
    assert waiting.HasField("next_attempt_at")

    p.start(p.a)
    add_student(p.a, "A1", small_records(9))
    p.b.server.district.wake_worker()
    wait_status(p.b, request_id, Status.PENDING)
    assert get(p.a, request_id).summary.status == Status.PENDING
    approve(p, request_id)
    import_(p, request_id)
    wait_status(p.a, request_id, Status.COMPLETE)


# --- messages that overtake each other -----------------------------------------------------------


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event a patched flow step waits on (released at teardown whatever happens)."""
    event = threading.Event()
    yield event
    event.set()


def test_decision_overtaken_by_its_records(
    districts: Pair, monkeypatch, gate: threading.Event
) -> None:
    """A's worker sends the decision and the records at once; the records may arrive
    first, and A may hear B's refusal of the decision before it records B's receipt."""
    p = districts
    district = p.a.server.district
    held: list[str] = []
    send_signed, mark_failed, open_from = (
        responder.send_signed,
        requester.mark_failed,
        district.open_from,
    )
    decision_done = threading.Event()

    def late_decision(d, item, done, rpc):  # type: ignore[no-untyped-def]
        if d.code == PRIOR and item.kind == "decision":
            held.append(item.request_id)
            assert gate.wait(WAIT_SECONDS)
            send_signed(d, item, done, rpc)
            decision_done.set()
            return None
        return send_signed(d, item, done, rpc)

    def failed(d, item, reason):  # type: ignore[no-untyped-def]
        try:
            return mark_failed(d, item, reason)
        finally:
            decision_done.set()

    def slow_receipt(label, signed, peer, message_type):  # type: ignore[no-untyped-def]
        if label == envelope.LABEL_DELIVERY_RECEIPT:
            assert decision_done.wait(WAIT_SECONDS)
        return open_from(label, signed, peer, message_type)

    monkeypatch.setattr(responder, "send_signed", late_decision)
    monkeypatch.setattr(requester, "mark_failed", failed)
    monkeypatch.setattr(district, "open_from", slow_receipt)
    add_student(p.a, "A1", small_records(11))
    add_student(p.b, "B1")
    request_id = create_request(p)
    p.a.rpc.ApproveRequest(
        registrar_pb2.ApproveRequestRequest(request_id=request_id, actor="alice"),
        timeout=RPC_TIMEOUT,
    )
    wait_status(p.b, request_id, Status.DATA_RECEIVED)
    assert held == [request_id]
    gate.set()  # the decision reaches B after the records

    # The late approval is recorded at B, A records the delivery and the
    # disclosure, and nothing failed anywhere.
    wait_status(p.a, request_id, Status.SENT)
    settle(p.a, p.b)
    detail = get(p.b, request_id)
    assert detail.approved and detail.summary.status == Status.DATA_RECEIVED
    assert "Approved by alice" in " | ".join(m.body for m in messages(p.b, request_id))
    for side in (p.a, p.b):
        assert count(side, OUTBOX, OUTBOX.c.status != "DONE") == 0, side.code
    assert count(p.a, DISCLOSURES) == 1
    import_(p, request_id)
    wait_status(p.a, request_id, Status.COMPLETE)


def test_import_notice_before_the_receipt_is_recorded(
    districts: Pair, monkeypatch, gate: threading.Event
) -> None:
    """B may import (and tell A) before A has recorded B's delivery receipt."""
    p = districts
    district = p.a.server.district
    open_from = district.open_from

    def slow_receipt(label, signed, peer, message_type):  # type: ignore[no-untyped-def]
        if label == envelope.LABEL_DELIVERY_RECEIPT:
            assert gate.wait(WAIT_SECONDS)
        return open_from(label, signed, peer, message_type)

    monkeypatch.setattr(district, "open_from", slow_receipt)
    add_student(p.a, "A1", small_records(12))
    add_student(p.b, "B1")
    request_id = create_request(p)
    p.a.rpc.ApproveRequest(
        registrar_pb2.ApproveRequestRequest(request_id=request_id, actor="alice"),
        timeout=RPC_TIMEOUT,
    )
    wait_status(p.b, request_id, Status.DATA_RECEIVED)
    import_(p, request_id)
    notice = OUTBOX.c.kind == "import_notice"
    wait_until(
        "B to try the import notice",
        lambda: count(
            p.b, OUTBOX, notice, (OUTBOX.c.attempts >= 1) | (OUTBOX.c.status != "QUEUED")
        ),
    )
    assert get(p.a, request_id).summary.status == Status.PENDING
    gate.set()

    wait_status(p.a, request_id, Status.COMPLETE)
    settle(p.a, p.b)
    assert count(p.a, DISCLOSURES) == 1
    for side in (p.a, p.b):
        assert count(side, OUTBOX, OUTBOX.c.status != "DONE") == 0, side.code
