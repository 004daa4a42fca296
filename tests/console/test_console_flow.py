"""A request from start to end through two consoles in two browsers, axe-core on every page.

Bob (requester at B) logs in with his TOTP code and asks A for B1's records;
Rita (responder at A), in a second browser, sees it waiting, opens it and
approves with the keyboard alone; Bob reviews the CONFLICT field by field,
takes the received row and imports; both see the final status and the thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from protos.rt.v1 import common_pb2
from tests.console.browsing import AXE_RESULTS, check_page, follow, login
from tests.console.conftest import ConsoleWorld
from tests.harness.flow import rows_of, wait_status
from tests.harness.world import PRIOR_SCHOOL

Status = common_pb2.RequestStatus


def _reload_until(driver: Any, what: str, probe: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
        driver.refresh()


def test_request_approve_review_import_in_two_browsers(
    console_world: ConsoleWorld, browser: Callable[[], Any]
) -> None:
    w = console_world
    bob, rita = browser(), browser()

    bob.get(w.new.url + "/login")
    check_page(bob, "login")
    login(bob, w.new, "bob")
    assert bob.current_url == w.new.url + "/"
    check_page(bob, "dashboard-requester")

    follow(bob, bob.find_element(By.LINK_TEXT, "New request"))
    bob.find_element(By.ID, "school-q").send_keys("Lincoln")
    follow(bob, bob.find_element(By.ID, "search"))
    check_page(bob, "new-request")
    Select(bob.find_element(By.ID, "student")).select_by_value("B1")
    Select(bob.find_element(By.ID, "prior_school")).select_by_value(PRIOR_SCHOOL)
    follow(bob, bob.find_element(By.ID, "create"))
    assert bob.find_element(By.ID, "status").text in ("QUEUED", "PENDING")
    rid = bob.current_url.rsplit("/", 1)[1]
    check_page(bob, "request-outbound")
    wait_status(w.pair.a, rid, Status.PENDING)

    # Rita, at A, sees it waiting on her.
    login(rita, w.prior, "rita")
    waiting = rita.find_element(By.ID, "waiting")
    assert rid[:8] in waiting.text
    check_page(rita, "dashboard-responder")
    follow(rita, waiting.find_element(By.PARTIAL_LINK_TEXT, rid[:8]))
    assert "exact" in rita.find_element(By.ID, "cand-1").find_element(By.XPATH, "..").text
    check_page(rita, "request-inbound")
    # The keyboard alone: Tab to the approve button, Enter.
    body = rita.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    for _ in range(40):
        if rita.switch_to.active_element.get_attribute("id") == "approve":
            break
        rita.switch_to.active_element.send_keys(Keys.TAB)
    assert rita.switch_to.active_element.get_attribute("id") == "approve"
    rita.switch_to.active_element.send_keys(Keys.ENTER)
    _reload_until(
        rita,
        "the approval",
        lambda: "Approved" in rita.page_source or rita.find_element(By.ID, "status").text == "SENT",
    )
    wait_status(w.pair.b, rid, Status.DATA_RECEIVED)

    # Bob reviews: the conflict field by field, a choice for it, then imports.
    bob.get(f"{w.new.url}/requests/{rid}")
    follow(bob, bob.find_element(By.ID, "review-link"))
    conflict = bob.find_element(By.CSS_SELECTOR, "fieldset.conflict")
    differs = conflict.find_element(By.CSS_SELECTOR, "tr.differs")
    assert differs.text.startswith("MK — Mark (differs) Z"), differs.text  # code and name
    assert "CN — Course number" in conflict.text and "YR — School year" in conflict.text
    check_page(bob, "review")
    conflict.find_element(By.CSS_SELECTOR, "input[value=theirs]").click()
    follow(bob, bob.find_element(By.ID, "import"))
    assert "Imported" in bob.find_element(By.CSS_SELECTOR, ".flash.ok").text
    assert bob.find_element(By.ID, "status").text == "IMPORTED"
    assert [r["MK"] for r in rows_of(w.pair.b, "HIS", "B1") if r["SQ"]] != ["Z"]

    bob.find_element(By.ID, "body").send_keys("Thank you, all received.")
    follow(bob, bob.find_element(By.ID, "send"))
    assert "Thank you, all received." in bob.find_element(By.ID, "thread").text
    check_page(bob, "thread-requester")

    # Rita sees COMPLETE and Bob's message, marked unread until she has read it.
    wait_status(w.pair.a, rid, Status.COMPLETE)

    def unread_on_dashboard() -> bool:
        rita.get(w.prior.url + "/")
        return rid[:8] in rita.find_element(By.ID, "unread").text

    _reload_until(rita, "Bob's message", unread_on_dashboard)
    check_page(rita, "dashboard")
    rita.get(f"{w.prior.url}/requests/{rid}")
    assert rita.find_element(By.ID, "status").text == "COMPLETE"
    thread = rita.find_element(By.ID, "thread")
    assert "Thank you, all received." in thread.text and "unread" in thread.text
    check_page(rita, "thread")
    rita.refresh()
    assert "unread" not in rita.find_element(By.ID, "thread").text

    rita.find_element(By.LINK_TEXT, "Disclosure log").click()
    rita.find_element(By.CSS_SELECTOR, "a#csv[href='/disclosures.csv']")  # the page loaded
    rows = [r.text for r in rita.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert any("rita" in row and rid[:8] in row for row in rows), rows
    check_page(rita, "disclosures")
    print("axe-core violations by page:", AXE_RESULTS)
