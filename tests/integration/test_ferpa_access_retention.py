"""FERPA 34 CFR 99.34 parent notices and copies, the EC 49064 access log, and retention
(34 CFR 99.32(a)(2)), through the ``rt`` commands against two real district servers.

PDFs are checked by reading their text back (pypdf).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pypdf import PdfReader
from sqlalchemy import select

from protos.rt.v1 import registrar_pb2
from rt_server.store.schema import DISCLOSURES, TRANSFER_CHUNKS, TRANSFERS
from tests.harness.cli import Rt
from tests.harness.flow import (
    FIRST,
    LAST,
    RPC_TIMEOUT,
    Status,
    add_student,
    approve,
    count,
    small_records,
    wait_status,
)
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR, Pair, World


def pdf_text(path: Path) -> str:
    text = " ".join((page.extract_text() or "") for page in PdfReader(path).pages)
    return " ".join(text.split())


def started(harness: World, **config: object) -> Pair:
    pair = harness.pair(**config)
    pair.start(pair.a)
    pair.start(pair.b)
    return pair


def request_and_send(pair: Pair, rt: Rt) -> str:
    add_student(pair.a, "A1", small_records(7))
    add_student(pair.b, "B1")
    run = rt(pair.b, "request", "create", "--student", "B1", "--prior-school", pair.a.school)
    assert run.code == 0, run.err
    (request_id,) = [
        r.request_id
        for r in pair.b.rpc.ListRequests(
            registrar_pb2.ListRequestsRequest(), timeout=RPC_TIMEOUT
        ).requests
    ]
    wait_status(pair.a, request_id, Status.PENDING)
    approve(pair, request_id, student="A1")
    return request_id


def test_each_disclosure_owes_a_parent_notice_letter_listed_until_mailed(
    harness: World, rt: Rt, tmp_path: Path
) -> None:
    pair = started(harness, annual_notice_covers_transfers=False)
    request_id = request_and_send(pair, rt)
    listed = rt(pair.a, "notices")
    assert listed.code == 0 and "A1" in listed.out and request_id[:8] in listed.out
    letter = tmp_path / "notice.pdf"
    assert rt(pair.a, "notices", "letter", "1", "--out", str(letter)).code == 0
    text = pdf_text(letter)
    assert f"{LAST}, {FIRST}" in text
    assert NEW in text and NEW_SCHOOL in text
    assert "34 CFR 99.34" in text and "copy of the records" in text
    assert (letter.stat().st_mode & 0o777) == 0o600
    again = rt(pair.a, "notices", "letter", "1", "--out", str(letter))
    assert again.code == 2 and "exists" in again.err
    assert rt(pair.a, "notices", "mark-mailed", "1").code == 0
    assert "No parent notice is waiting" in rt(pair.a, "notices").out
    twice = rt(pair.a, "notices", "mark-mailed", "1")
    assert twice.code == 1 and "already marked mailed" in twice.err
    assert "registrar" in rt(pair.a, "notices", "--all").out
    # B disclosed nothing: it owes nothing.
    assert "No parent notice" in rt(pair.b, "notices").out


def test_no_parent_notice_when_the_annual_notice_covers_transfers(harness: World, rt: Rt) -> None:
    pair = started(harness)  # annual_notice_covers_transfers = true (the default)
    request_and_send(pair, rt)
    assert "No parent notice is waiting" in rt(pair.a, "notices").out


def test_the_parents_copy_of_what_was_disclosed_as_pdf_and_csv(
    harness: World, rt: Rt, tmp_path: Path
) -> None:
    pair = started(harness)
    request_id = request_and_send(pair, rt)
    records = small_records(7)
    courses = {row.get("CO") or row.get("co") for row in records["HIS"]} - {None, ""}
    assert courses
    pdf, sheet = tmp_path / "copy.pdf", tmp_path / "copy.csv"
    assert rt(pair.a, "notices", "copy", "A1", request_id[:8], "--out", str(pdf)).code == 0
    text = pdf_text(pdf)
    assert f"{LAST}, {FIRST}" in text and all(c in text for c in courses)
    assert rt(pair.a, "notices", "copy", "A1", request_id, "--out", str(sheet)).code == 0
    lines = list(csv.DictReader(io.StringIO(sheet.read_text(encoding="utf-8"))))
    assert {line["table"] for line in lines} == set(records)
    assert {line["value"] for line in lines if line["column"] == "CO"} == courses
    wrong = rt(pair.a, "notices", "copy", "A1", "ffffffff", "--out", str(tmp_path / "x.csv"))
    assert wrong.code == 1 and "no disclosure" in wrong.err
    assert not (tmp_path / "x.csv").exists()


def test_the_access_log_names_who_viewed_sent_and_imported_and_when(harness: World, rt: Rt) -> None:
    pair = started(harness)
    request_id = request_and_send(pair, rt)
    assert rt(pair.a, "student", "show", "A1").code == 0
    assert rt(pair.b, "review", request_id[:8]).code == 0
    assert rt(pair.b, "import", request_id[:8]).code == 0
    at_a = rt(pair.a, "access-log", "A1")
    assert at_a.code == 0, at_a.err
    assert "viewed (rt student show)" in at_a.out and "sent (disclosed)" in at_a.out
    assert f"district {NEW}" in at_a.out  # who asked
    at_b = rt(pair.b, "access-log", "B1", "--json")
    whats = {e["what"] for e in __import__("json").loads(at_b.out)}
    assert {"viewed (review of received records)", "imported", "received"} <= whats
    unknown = rt(pair.a, "access-log", "NOBODY")
    assert unknown.code == 1


def test_a_purge_deletes_received_ciphertext_and_keeps_the_disclosure_log(
    harness: World, rt: Rt
) -> None:
    pair = started(harness)
    # A discloses to B; then B discloses to A, which imports: A holds both a
    # disclosure and a received transfer.
    request_and_send(pair, rt)
    add_student(pair.b, "B2", small_records(9), ssid="2234567890")
    add_student(pair.a, "A2", ssid="2234567890")
    created = pair.a.rpc.CreateRequest(
        registrar_pb2.CreateRequestRequest(
            student_local_id="A2", prior_school=NEW_SCHOOL, actor="alice"
        ),
        timeout=RPC_TIMEOUT,
    )
    back = created.summary.request_id
    wait_status(pair.b, back, Status.PENDING)
    pair.b.rpc.ApproveRequest(
        registrar_pb2.ApproveRequestRequest(request_id=back, student_local_id="B2", actor="bob"),
        timeout=RPC_TIMEOUT,
    )
    wait_status(pair.a, back, Status.DATA_RECEIVED)
    assert rt(pair.a, "import", back[:8]).code == 0
    with pair.a.engine.connect() as conn:
        disclosures_before = conn.execute(select(DISCLOSURES)).all()
    chunks_before = count(pair.a, TRANSFER_CHUNKS)
    assert disclosures_before and chunks_before

    kept = rt(pair.a, "purge", "--dry-run")  # imported today: within the 90 days
    assert kept.code == 0 and "0 received transfer(s)" in kept.out
    dry = rt(pair.a, "purge", "--dry-run", "--days", "0")
    assert "1 received transfer(s)" in dry.out and "Dry run" in dry.out
    assert count(pair.a, TRANSFER_CHUNKS) == chunks_before
    done = rt(pair.a, "purge", "--days", "0")
    assert done.code == 0 and "deleted" in done.out
    assert count(pair.a, TRANSFER_CHUNKS) == 0
    with pair.a.engine.connect() as conn:
        assert conn.execute(select(DISCLOSURES)).all() == disclosures_before
        (purged,) = conn.execute(
            select(TRANSFERS.c.purged_at).where(TRANSFERS.c.request_id == back)
        ).all()
    assert purged[0] is not None
    assert "0 received transfer(s)" in rt(pair.a, "purge", "--days", "0").out
    review = rt(pair.a, "review", back[:8])
    assert review.code == 1 and "deleted" in review.err
    assert "received copy deleted (retention)" in rt(pair.a, "access-log", "A2").out
    assert PRIOR
