"""Batch actions on the dashboard, as ``rt approve --all-exact`` and ``rt import --all-new``:
a responder approves every exact match, a requester imports every all-NEW transfer, each
item with its outcome; a requester may not run the responder's batch, nor anyone without
the form's CSRF token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selenium.webdriver.common.by import By

from protos.rt.v1 import common_pb2, registrar_pb2
from tests.console.browsing import check_page, login
from tests.console.conftest import ConsoleWorld
from tests.console.test_console_attacks import http_login
from tests.harness.flow import add_student, assert_unchanged, small_records, snapshot, wait_status
from tests.harness.world import PRIOR_SCHOOL

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
