"""Batch actions on the dashboard, as ``rt approve --all-exact`` and ``rt import --all-new``:
a responder approves every exact match, a requester imports every all-NEW transfer, each
item with its outcome; a requester may not run the responder's batch, nor anyone without
the form's CSRF token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By

from protos.rt.v1 import common_pb2, registrar_pb2
from tests.console.browsing import check_page, login
from tests.console.conftest import ConsoleWorld
from tests.console.test_console_attacks import http_login
from tests.harness.flow import add_student, assert_unchanged, small_records, snapshot, wait_status
from tests.harness.world import NEW_SCHOOL, PRIOR_SCHOOL

Status = common_pb2.RequestStatus
SSID3 = "3234567890"


def _outcome_of(driver: Any, short: str) -> str:
    for row in driver.find_elements(By.CSS_SELECTOR, "#batch tbody tr"):
        if row.text.startswith(short):
            return str(row.find_element(By.CSS_SELECTOR, ".outcome").text)
    raise AssertionError(f"{short} not in {driver.find_element(By.ID, 'batch').text}")


def test_batch_approve_and_import_from_the_dashboard(
    console_world: ConsoleWorld, browser: Callable[[], Any]
) -> None:
    w = console_world
    a, b = w.pair.a, w.pair.b
    add_student(a, "A3", small_records(7, n=2), ssid=SSID3)
    add_student(b, "B3", ssid=SSID3)
    rid = b.rpc.CreateRequest(
        registrar_pb2.CreateRequestRequest(
            student_local_id="B3", prior_school=PRIOR_SCHOOL, actor="setup"
        ),
        timeout=10,
    ).summary.request_id
    wait_status(a, rid, Status.PENDING)

    # Refused batches change nothing: a requester at A, a missing CSRF token.
    _, rob = http_login(w.prior, "rob")
    before = snapshot(a)
    reply = rob.post("/batch/approve-exact", {"csrf": rob.csrf})
    assert reply.status_code == 403 and "may not approve" in reply.text
    _, rita_http = http_login(w.prior, "rosa")
    reply = rita_http.post("/batch/approve-exact", {})
    assert reply.status_code == 403 and "did not come from this console" in reply.text
    assert_unchanged(before, snapshot(a))

    rita = browser()
    login(rita, w.prior, "rosa")
    rita.find_element(By.ID, "approve-exact").click()
    assert _outcome_of(rita, rid[:8]) == "done"
    assert "done" in rita.find_element(By.ID, "batch-counts").text
    check_page(rita, "batch-approve")
    wait_status(b, rid, Status.DATA_RECEIVED)

    bob = browser()
    login(bob, w.new, "bea")
    bob.find_element(By.ID, "import-new").click()
    assert _outcome_of(bob, rid[:8]) == "done"
    check_page(bob, "batch-import")
    assert b.rpc.GetRequest(registrar_pb2.RequestRef(request_id=rid)).summary.status == (
        Status.IMPORTED
    )


def test_requests_from_a_csv_file(
    console_world: ConsoleWorld, browser: Callable[[], Any], tmp_path: Path
) -> None:
    """As ``rt request create --from-csv``: a line per request, each with its outcome (one
    enrolls its student on the way, one names no student here and fails alone); a file
    that is not such a CSV is refused whole and sends nothing."""
    w = console_world
    b = w.pair.b
    good = tmp_path / "enrolled.csv"
    good.write_text(
        "local_id,prior_school,ssid,first,last,birth_date,school\n"
        f"B4,{PRIOR_SCHOOL},4234567890,Dee,Fourth,2011-05-06,{NEW_SCHOOL}\n"
        f"B99,{PRIOR_SCHOOL},,,,,\n",
        encoding="utf-8",
    )
    bad = tmp_path / "wrong.csv"
    bad.write_text(f"student,school\nB4,{PRIOR_SCHOOL}\n", encoding="utf-8")

    bea = browser()
    login(bea, w.new, "bea", path="/requests/new")
    before = snapshot(b)
    bea.find_element(By.ID, "csv").send_keys(str(bad))
    bea.find_element(By.ID, "send-csv").click()
    refusal = bea.find_element(By.ID, "error-message").text  # on the page the click loads
    assert "needs a header row" in refusal and "Nothing was sent" in refusal, refusal
    assert_unchanged(before, snapshot(b))

    bea.get(w.new.url + "/requests/new")
    check_page(bea, "new-request")
    bea.find_element(By.ID, "csv").send_keys(str(good))
    bea.find_element(By.ID, "send-csv").click()
    rows = {
        r.find_elements(By.TAG_NAME, "td")[1].text: r.find_element(By.CSS_SELECTOR, ".outcome").text
        for r in bea.find_elements(By.CSS_SELECTOR, "#batch tbody tr")
    }
    assert rows == {"B4": "done", "B99": "FAILED"}, bea.find_element(By.ID, "batch").text
    assert bea.find_element(By.CSS_SELECTOR, "#batch tbody tr").text.startswith("line 2 · ")
    check_page(bea, "batch-requests")
