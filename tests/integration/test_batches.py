"""The summer rush, in batches (issue 14, item 4), against two real running districts.

``rt request create --from-csv``, ``rt approve --all-exact`` and ``rt import
--all-new``: one line an item (``--json``: a list), exit 1 if any item
failed; each item its own transaction, so a failure in the middle leaves the
items before it done and the items after it tried. ``rt`` runs in this process
(``rt_client.cli.main``) against the districts' registrar sockets.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from protos.rt.v1 import registrar_pb2
from rt_client.errors import IntegrityError
from rt_server.flows import requester, responder, review
from tests.harness.cli import Rt
from tests.harness.flow import (
    RPC_TIMEOUT,
    Status,
    add_student,
    approve,
    assert_unchanged,
    create_request,
    get,
    settle,
    small_records,
    snapshot,
    wait_status,
)
from tests.harness.world import NEW_SCHOOL, PRIOR_SCHOOL, Pair, Side

UNREGISTERED_SCHOOL = "19647330000000"  # district A's code, a school A never registered


def _ordered_id(n: int) -> str:
    """Request ids that sort in creation order (the batches work oldest first)."""
    return f"{n:08x}-0000-4000-8000-000000000000"


def _requests_in_order(p: Pair, students: list[str]) -> list[str]:
    made = []
    for n, local_id in enumerate(students, start=1):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(requester, "new_id", lambda n=n: _ordered_id(n))
            made.append(create_request(p, local_id))
    return made


def _outbound(side: Side) -> dict[str, registrar_pb2.RequestSummary]:
    listing = side.rpc.ListRequests(
        registrar_pb2.ListRequestsRequest(direction=registrar_pb2.OUTBOUND), timeout=RPC_TIMEOUT
    )
    return {r.request_id: r for r in listing.requests}


def _fail_for(request_id: str, real: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, except that it fails for ``request_id`` (as a corrupt transfer would)."""

    def call(d: Any, **kw: Any) -> Any:
        if kw["request_id"] == request_id:
            raise IntegrityError("the transfer failed its integrity check (test)")
        return real(d, **kw)

    return call


# --- rt request create --from-csv ------------------------------------------------------------


def test_requests_from_csv_with_bad_lines_in_the_middle(
    districts: Pair, rt: Rt, tmp_path: Path
) -> None:
    p = districts
    for n in (1, 2, 3):
        add_student(p.b, f"B{n}", ssid=f"100000000{n}")
    csv_file = tmp_path / "rush.csv"
    csv_file.write_text(
        "local_id,prior_school,prior_local_id,tables\n"
        f"B1,{PRIOR_SCHOOL},,\n"
        f"NOPE,{PRIOR_SCHOOL},,\n"  # not enrolled here
        f"B2,{UNREGISTERED_SCHOOL},A2,\n"  # not a school of A's
        f'B3,{PRIOR_SCHOOL},A3,"HIS,ENR"\n',
        encoding="utf-8",
    )
    run = rt(p.b, "request", "create", "--from-csv", str(csv_file))
    assert run.code == 1, run
    lines = run.out.splitlines()
    assert lines[0].startswith("line 2") and "done" in lines[0], run.out
    assert lines[1].startswith("line 3") and "FAILED" in lines[1] and "NOPE" in run.out
    assert lines[2].startswith("line 4") and "FAILED" in lines[2], run.out
    assert UNREGISTERED_SCHOOL in lines[2]
    assert lines[3].startswith("line 5") and "done" in lines[3], run.out
    assert "2 requested, 0 left for a person, 2 failed." in run.out
    assert "2 of 4 item(s) failed" in run.err

    made = _outbound(p.b)
    assert len(made) == 2
    by_student = {get(p.b, i).local_student_id: get(p.b, i) for i in made}
    assert set(by_student) == {"B1", "B3"}
    assert by_student["B3"].prior_local_id == "A3"
    assert len(by_student["B3"].tables) == 2
    for detail in by_student.values():  # sent at once: A has them
        wait_status(p.a, detail.summary.request_id, Status.PENDING)

    # --json: the list of items, and the failure as a JSON error on stderr.
    again = tmp_path / "again.csv"
    again.write_text(f"local_id,prior_school\nB2,{PRIOR_SCHOOL}\nGONE,{PRIOR_SCHOOL}\n")
    as_json = rt(p.b, "request", "create", "--from-csv", str(again), "--json")
    assert as_json.code == 1
    items = json.loads(as_json.out)
    assert [(i["label"], i["outcome"]) for i in items] == [
        ("line 2", "ITEM_DONE"),
        ("line 3", "ITEM_FAILED"),
    ]
    assert items[1]["error_code"] == "not_found" and items[0]["student_local_id"] == "B2"
    assert json.loads(as_json.err)["error"]["code"] == "batch_items_failed"


def test_a_csv_line_with_demographics_enrolls_the_student_with_the_request(
    districts: Pair, rt: Rt, tmp_path: Path
) -> None:
    """Enrolling and requesting are one transaction: a line whose request fails enrolls nobody."""
    p = districts
    add_student(p.b, "B1", ssid="4000000001")
    csv_file = tmp_path / "new-students.csv"
    csv_file.write_text(
        "local_id,prior_school,ssid,first,middle,last,birth_date,gender,school\n"
        f"N1,{PRIOR_SCHOOL},4000000002,Ana,,Nuñez,2011-04-02,F,{NEW_SCHOOL}\n"
        f"N2,{UNREGISTERED_SCHOOL},4000000003,Luis,,Ortega,2010-09-01,M,{NEW_SCHOOL}\n"
        f"N3,{PRIOR_SCHOOL},4000000001,Mia,,Chen,2012-01-05,F,{NEW_SCHOOL}\n"  # B1's SSID
        f"B1,{PRIOR_SCHOOL},4000000001,Ana,,Nuñez,2011-04-02,F,{NEW_SCHOOL}\n"  # enrolled
        f"N4,{PRIOR_SCHOOL},,Eva,,Díaz,2011-06-30,,{NEW_SCHOOL}\n",
        encoding="utf-8",
    )
    run = rt(p.b, "request", "create", "--from-csv", str(csv_file), "--json")
    assert run.code == 1, run
    items = json.loads(run.out)
    assert [i["outcome"] for i in items] == [
        "ITEM_DONE",
        "ITEM_FAILED",
        "ITEM_FAILED",
        "ITEM_DONE",
        "ITEM_DONE",
    ], items
    assert items[0]["message"].startswith("enrolled; requested")
    assert items[3]["message"].startswith("requested")  # B1 was enrolled already
    assert "SSID" in items[2]["message"]

    def enrolled(local_id: str) -> bool:
        found = p.b.rpc.ListStudents(
            registrar_pb2.ListStudentsRequest(query=local_id), timeout=RPC_TIMEOUT
        )
        return any(s.local_id == local_id for s in found.students)

    assert enrolled("N1") and enrolled("N4")
    assert not enrolled("N2") and not enrolled("N3")  # their requests failed: rolled back
    n1 = p.b.rpc.GetStudent(registrar_pb2.StudentRef(local_id="N1"), timeout=RPC_TIMEOUT)
    assert (n1.student.legal_last_name, n1.student.birth_date) == ("Nuñez", "2011-04-02")
    made = {get(p.b, i).local_student_id for i in _outbound(p.b)}
    assert made == {"N1", "B1", "N4"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("student,school\nB1,x\n", "needs a header row"),
        (f"local_id,prior_school,tables\nB1,{PRIOR_SCHOOL},NOPE\n", "line 2: tables takes"),
        (f"local_id,prior_school\nB1,{PRIOR_SCHOOL},extra\n,{PRIOR_SCHOOL}\n", "2 problem(s)"),
        ("local_id,prior_school\n", "lists no students"),
    ],
)
def test_a_bad_csv_file_is_refused_whole(
    districts: Pair, rt: Rt, tmp_path: Path, text: str, says: str
) -> None:
    p = districts
    add_student(p.b, "B1")
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(text, encoding="utf-8")
    before = snapshot(p.b)
    run = rt(p.b, "request", "create", "--from-csv", str(csv_file))
    assert run.code == 2 and says in run.err, run
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(f"local_id,prior_school\nB\xe91,{PRIOR_SCHOOL}\n".encode("latin-1"))
    assert "not UTF-8" in rt(p.b, "request", "create", "--from-csv", str(latin1)).err
    both = rt(p.b, "request", "create", "--from-csv", str(csv_file), "--student", "B1")
    assert both.code == 2 and "takes no --student" in both.err
    assert_unchanged(before, snapshot(p.b))


# --- rt approve --all-exact ------------------------------------------------------------------


def test_approve_all_exact_approves_only_exact_matches(districts: Pair, rt: Rt) -> None:
    p = districts
    # A holds: A1, A2 and A5 exactly as B names them; A4 with B4's SSID but another
    # birth date; A3 with B3's name and birth date but another SSID (a near match).
    add_student(p.a, "A1", small_records(1, 1), ssid="2000000001", first="Ana", last="Nuñez")
    add_student(p.a, "A2", ssid="2000000002", first="Luis", last="Ortega")
    add_student(p.a, "A3", ssid="2000000099", first="Mia", last="Chen")
    add_student(p.a, "A4", ssid="2000000004", first="Sam", last="Reyes", birth="2010-01-01")
    add_student(p.a, "A5", ssid="2000000005", first="Eva", last="Díaz")
    add_student(p.b, "B1", ssid="2000000001", first="ANA", last="Nunez")  # case, accents
    add_student(p.b, "B2", ssid="2000000002", first="Luis", last="Ortega")
    add_student(p.b, "B3", ssid="2000000003", first="Mia", last="Chen")
    add_student(p.b, "B4", ssid="2000000004", first="Sam", last="Reyes")
    add_student(p.b, "B5", ssid="2000000005", first="Eva", last="Díaz")
    ids = _requests_in_order(p, ["B1", "B2", "B3", "B4", "B5"])
    # The second exact match fails (its approval cannot be recorded): the others go on.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(responder, "approve_request", _fail_for(ids[1], responder.approve_request))
        run = rt(p.a, "approve", "--all-exact", "--json")
    assert run.code == 1, run
    items = json.loads(run.out)
    assert [(i["request_id"], i["outcome"]) for i in items] == [
        (ids[0], "ITEM_DONE"),
        (ids[1], "ITEM_FAILED"),
        (ids[2], "ITEM_LEFT"),
        (ids[3], "ITEM_LEFT"),
        (ids[4], "ITEM_DONE"),
    ]
    assert items[0]["student_local_id"] == "A1" and items[4]["student_local_id"] == "A5"
    assert "integrity check" in items[1]["message"]
    assert "no student here has the request's SSID" in items[2]["message"]
    assert "the SSID matches student A4, but the birth date differs" in items[3]["message"]

    wait_status(p.b, ids[0], Status.DATA_RECEIVED)
    wait_status(p.b, ids[4], Status.DATA_RECEIVED)
    for left in ids[1:4]:
        detail = get(p.a, left)
        assert detail.summary.status == Status.PENDING and not detail.approved, detail

    # Run again (the failure gone): only the one that failed is approved now; the
    # near matches stay for a person. Human output, one line an item.
    settle(p.a, p.b)
    again = rt(p.a, "approve", "--all-exact")
    assert again.code == 0, again
    lines = again.out.splitlines()
    assert len(lines) == 4, again.out
    assert lines[0].startswith(ids[1][:8]) and " done " in lines[0] and "A2" in lines[0]
    assert " left " in lines[1] and " left " in lines[2]
    assert "1 approved, 2 left for a person, 0 failed." in again.out
    wait_status(p.b, ids[1], Status.DATA_RECEIVED)
    assert get(p.a, ids[2]).summary.status == Status.PENDING


# --- rt import --all-new ---------------------------------------------------------------------


def test_import_all_new_imports_only_all_new_transfers(districts: Pair, rt: Rt) -> None:
    p = districts
    for n in (1, 2, 3, 4):
        add_student(p.a, f"A{n}", small_records(n, 2), ssid=f"300000000{n}")
    add_student(p.b, "B1", ssid="3000000001")
    add_student(p.b, "B2", small_records(2, 2), ssid="3000000002")  # holds A2's rows already
    add_student(p.b, "B3", ssid="3000000003")
    add_student(p.b, "B4", ssid="3000000004")
    ids = _requests_in_order(p, ["B1", "B2", "B3", "B4"])
    for n, request_id in enumerate(ids, start=1):
        approve(p, request_id, f"A{n}")
    with pytest.MonkeyPatch.context() as patch:
        failing = _fail_for(ids[2], review.import_received_transfer)
        patch.setattr(review, "import_received_transfer", failing)
        run = rt(p.b, "import", "--all-new")
    assert run.code == 1, run
    lines = run.out.splitlines()
    assert lines[0].startswith(ids[0][:8]) and " done " in lines[0], run.out
    assert " left " in lines[1] and "duplicate" in lines[1], run.out
    assert " FAILED " in lines[2] and "integrity check" in lines[2], run.out
    assert " done " in lines[3], run.out
    assert "2 imported, 1 left for a person, 1 failed." in run.out

    status = {i: get(p.b, i).summary.status for i in ids}
    assert status == {
        ids[0]: Status.IMPORTED,
        ids[1]: Status.DATA_RECEIVED,
        ids[2]: Status.DATA_RECEIVED,
        ids[3]: Status.IMPORTED,
    }
    as_json = rt(p.b, "import", "--all-new", "--json")
    assert as_json.code == 0, as_json
    assert [(i["request_id"], i["outcome"]) for i in json.loads(as_json.out)] == [
        (ids[1], "ITEM_LEFT"),
        (ids[2], "ITEM_DONE"),
    ]


def test_import_all_new_leaves_a_transfer_with_one_held_row_untouched(
    districts: Pair, rt: Rt
) -> None:
    """One pass imports and rolls back: a single row we hold already leaves nothing written."""
    p = districts
    add_student(p.a, "A1", small_records(1, 3), ssid="3100000001")
    add_student(p.b, "B1", small_records(1, 1), ssid="3100000001")  # one of A1's rows
    (request_id,) = _requests_in_order(p, ["B1"])
    approve(p, request_id, "A1")
    wait_status(p.b, request_id, Status.DATA_RECEIVED)
    before = snapshot(p.b)
    run = rt(p.b, "import", "--all-new")
    assert run.code == 0, run
    assert " left " in run.out and "duplicate" in run.out, run.out
    assert "0 imported, 1 left for a person, 0 failed." in run.out
    assert_unchanged(before, snapshot(p.b))
    assert get(p.b, request_id).summary.status == Status.DATA_RECEIVED


def test_batch_options_and_single_options_do_not_mix(districts: Pair, rt: Rt) -> None:
    p = districts
    add_student(p.b, "B1")
    request_id = create_request(p)
    before = snapshot(p.a)
    assert "takes no request id" in rt(p.a, "approve", request_id, "--all-exact").err
    assert "takes no --student" in rt(p.a, "approve", "--all-exact", "--student", "A1").err
    assert "give the request" in rt(p.a, "approve").err
    assert "takes no --keep-both" in rt(p.b, "import", "--all-new", "--keep-both", "all").err
    assert "give the request" in rt(p.b, "import").err
    assert "--from-csv FILE" in rt(p.b, "request", "create", "--student", "B1").err
    assert_unchanged(before, snapshot(p.a))
    # Nothing to do is not a failure.
    nothing = rt(p.b, "import", "--all-new")
    assert nothing.code == 0 and "Nothing to do." in nothing.out
    assert rt(p.b, "approve", "--all-exact", "--json").out.strip() == "[]"
    # The service, for admin scripts on the generated stubs.
    reply = p.a.rpc.ApproveExactMatches(registrar_pb2.BatchRef(actor="s"), timeout=RPC_TIMEOUT)
    assert reply.left == 1 and reply.items[0].request_id == request_id
