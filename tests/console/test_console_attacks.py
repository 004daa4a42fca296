"""Attacks on the console, each asserting the refusal and that nothing changed.

The HTTP-level attacks use a plain HTTP client holding a real logged-in
session (the cookie and CSRF token a browser would have); the script
injections and the open redirect run in headless Chromium.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from protos.rt.v1 import common_pb2, registrar_pb2
from tests.console.browsing import assert_no_dialog, check_page, login
from tests.console.conftest import XSS_NAME, ConsoleWorld
from tests.harness.console import PASSWORD, ConsoleProcess
from tests.harness.flow import add_student, assert_unchanged, snapshot, wait_status
from tests.harness.world import NEW_SCHOOL, PRIOR_SCHOOL, Side

Status = common_pb2.RequestStatus
SCRIPT_MESSAGE = "<script>alert('thread')</script> see the attached"


@dataclass
class HttpStaff:
    """A logged-in session as a browser holds it: the cookie and the page's CSRF token."""

    client: httpx.Client
    cookie: str
    csrf: str

    def headers(self, cookie: str | None = None) -> dict[str, str]:
        return {"cookie": f"rt_console_session={cookie or self.cookie}"}

    def post(self, path: str, data: dict[str, str], cookie: str | None = None) -> httpx.Response:
        return self.client.post(path, data=data, headers=self.headers(cookie))

    def get(self, path: str, cookie: str | None = None) -> httpx.Response:
        return self.client.get(path, headers=self.headers(cookie))


def _cookie(reply: httpx.Response) -> str:
    found = re.search(r"rt_console_session=([^;]+)", reply.headers.get("set-cookie", ""))
    assert found, reply.headers
    return found.group(1)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    return found.group(1)


def http_login(
    console: ConsoleProcess, username: str, password: str = PASSWORD, nxt: str = "/"
) -> tuple[httpx.Response, HttpStaff]:
    client = httpx.Client(base_url=console.url, follow_redirects=False, timeout=30)
    form = client.get("/login")
    cookie, csrf = _cookie(form), _csrf(form.text)
    reply = client.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "code": console.code(username, consume=password == PASSWORD),
            "csrf": csrf,
            "next": nxt,
        },
        headers={"cookie": f"rt_console_session={cookie}"},
    )
    if reply.status_code != 303:
        return reply, HttpStaff(client, cookie, csrf)
    staff = HttpStaff(client, _cookie(reply), "")
    staff.csrf = _csrf(staff.get("/").text)
    return reply, staff


@pytest.fixture(scope="module")
def rita(console_world: ConsoleWorld) -> HttpStaff:
    """Rita (responder at A) logged in once for the module's HTTP attacks."""
    return http_login(console_world.prior, "rita")[1]


@pytest.fixture(scope="module")
def pending(console_world: ConsoleWorld) -> Iterator[str]:
    """A request from B for B2 (the student named like an img tag), PENDING at A."""
    b = console_world.pair.b
    detail = b.rpc.CreateRequest(
        registrar_pb2.CreateRequestRequest(
            student_local_id="B2", prior_school=PRIOR_SCHOOL, actor="setup"
        ),
        timeout=10,
    )
    rid = detail.summary.request_id
    wait_status(console_world.pair.a, rid, Status.PENDING)
    yield rid


def _refused(reply: httpx.Response, status: int, words: str) -> None:
    assert reply.status_code == status, (reply.status_code, reply.text[-500:])
    assert words in reply.text


def test_csrf_token_missing_or_wrong_is_refused(
    console_world: ConsoleWorld, pending: str, rita: HttpStaff
) -> None:
    a = console_world.pair.a
    before = snapshot(a)
    for data in ({}, {"csrf": "forged-" + rita.csrf[7:]}, {"csrf": ""}):
        reply = rita.post(f"/requests/{pending}/approve", {**data, "student": "A2"})
        _refused(reply, 403, "did not come from this console")
    assert_unchanged(before, snapshot(a))
    assert a.rpc.GetRequest(registrar_pb2.RequestRef(request_id=pending)).approved is False


def test_wrong_role_is_refused(console_world: ConsoleWorld, pending: str) -> None:
    a = console_world.pair.a
    _, rex = http_login(console_world.prior, "rex")  # a requester may not approve or reject
    before = snapshot(a)
    _refused(
        rex.post(f"/requests/{pending}/approve", {"csrf": rex.csrf, "student": "A2"}),
        403,
        "may not approve",
    )
    _refused(
        rex.post(f"/requests/{pending}/reject", {"csrf": rex.csrf, "reason": "OTHER"}),
        403,
        "may not reject",
    )
    _refused(
        rex.post(f"/requests/{pending}/messages", {"csrf": rex.csrf, "body": "hi"}),
        403,
        "may not write",
    )
    assert_unchanged(before, snapshot(a))


THIRD, THIRD_SCHOOL = "2222222", "22222220000001"


@pytest.fixture(scope="module")
def third_party_request(console_world: ConsoleWorld) -> tuple[Side, str]:
    """A third district C, and a real request of C's to B (for B2): an id A never held."""
    world = console_world.world
    c = Side(THIRD, THIRD_SCHOOL, world.enroll(THIRD, "Third Unified", [(THIRD_SCHOOL, "Third")]))
    c.start()
    world.started.append(c)
    add_student(c, "C2", ssid="2234567890", first="Cam", last="Third")
    detail = c.rpc.CreateRequest(
        registrar_pb2.CreateRequestRequest(
            student_local_id="C2", prior_school=NEW_SCHOOL, actor="setup"
        ),
        timeout=10,
    )
    rid = detail.summary.request_id
    wait_status(console_world.pair.b, rid, Status.PENDING)
    return c, rid


def test_another_districts_request_id_is_not_found(
    console_world: ConsoleWorld, rita: HttpStaff, third_party_request: tuple[Side, str]
) -> None:
    """Rita at A uses the id of a real request between C and B: A holds no such request,
    the console says so, and none of the three districts changed."""
    c, rid = third_party_request
    a, b = console_world.pair.a, console_world.pair.b
    before = [snapshot(side) for side in (a, b, c)]
    for path in (f"/requests/{rid}", f"/requests/{rid}/review"):
        _refused(rita.get(path), 404, "Not done")
    for action, data in (
        ("approve", {"student": "A2"}),
        ("reject", {"reason": "OTHER"}),
        ("messages", {"body": "hello"}),
    ):
        _refused(rita.post(f"/requests/{rid}/{action}", {"csrf": rita.csrf, **data}), 404, "")
    for was, side in zip(before, (a, b, c), strict=True):
        assert_unchanged(was, snapshot(side))
    assert b.rpc.GetRequest(registrar_pb2.RequestRef(request_id=rid)).approved is False


def test_session_is_dead_after_logout(console_world: ConsoleWorld, pending: str) -> None:
    a = console_world.pair.a
    _, rita = http_login(console_world.prior, "rex")
    assert rita.get("/").status_code == 200
    assert rita.post("/logout", {"csrf": rita.csrf}).status_code == 303
    before = snapshot(a)
    reply = rita.get("/")
    assert reply.status_code == 303 and reply.headers["location"].startswith("/login")
    _refused(
        rita.post(f"/requests/{pending}/approve", {"csrf": rita.csrf, "student": "A2"}),
        401,
        "not logged in",
    )
    assert_unchanged(before, snapshot(a))


def test_brute_force_locks_the_account(console_world: ConsoleWorld) -> None:
    new = console_world.new
    for attempt in range(5):
        reply, _ = http_login(new, "lou", password=f"guess number {attempt}")
        _refused(reply, 401, "wrong user name, password or code")
    reply, staff = http_login(new, "lou")  # the right password and code: still refused
    _refused(reply, 401, "locked for")
    assert staff.get("/").status_code == 303  # no session was made


@pytest.mark.parametrize(
    ("target", "who"),
    [("https://evil.example/", "ada"), ("//evil.example/x", "ada"), ("/\\evil.example", "cy")],
)
def test_next_never_leaves_the_console(console_world: ConsoleWorld, target: str, who: str) -> None:
    reply, _ = http_login(console_world.new, who, nxt=target)
    assert reply.status_code == 303 and reply.headers["location"] == "/"


def test_script_in_a_name_or_a_message_stays_text(
    console_world: ConsoleWorld, pending: str, browser: Callable[[], Any]
) -> None:
    w = console_world
    bob, rita = browser(), browser()
    login(bob, w.new, "bob", path="/login?next=https://evil.example/")
    assert bob.current_url == w.new.url + "/"  # the open redirect, in a real browser
    bob.get(f"{w.new.url}/requests/{pending}")
    assert XSS_NAME in bob.find_element(By.ID, "student-name").text
    assert bob.execute_script("return document.querySelectorAll('main img').length") == 0
    bob.find_element(By.ID, "body").send_keys(SCRIPT_MESSAGE)
    bob.find_element(By.ID, "send").click()
    assert SCRIPT_MESSAGE in bob.find_element(By.ID, "thread").text
    check_page(bob, "request-hostile-text")

    login(rita, w.prior, "ria")
    assert XSS_NAME in rita.find_element(By.ID, "waiting").text
    assert_no_dialog(rita)
    rita.get(f"{w.prior.url}/requests/{pending}")

    def arrived() -> bool:
        rita.refresh()
        return SCRIPT_MESSAGE in rita.find_element(By.ID, "thread").text

    from scripts.loopback import wait_for

    wait_for("the message at A", arrived, timeout=15, interval=0.3)
    assert (
        rita.execute_script("return document.querySelectorAll('main script, main img').length") == 0
    )
    assert_no_dialog(rita)


def test_an_injected_script_is_blocked_and_reported(
    console_world: ConsoleWorld, pending: str, browser: Callable[[], Any]
) -> None:
    """What escaping would let through if it failed: the CSP blocks it, the browser reports it
    to the console, and the console logs the block without the page's student data."""
    from scripts.loopback import wait_for

    w = console_world
    rita = browser()
    login(rita, w.prior, "ria", path=f"/requests/{pending}")
    assert XSS_NAME in rita.find_element(By.ID, "student-name").text
    log = w.prior.process
    assert log is not None
    before = log.log.read_text(encoding="utf-8", errors="replace")
    # An inline script element and the student's name as markup (an inline event handler).
    rita.execute_script(
        "const s = document.createElement('script');"
        "s.textContent = \"alert('injected'); document.title = 'ran';\";"
        "document.body.appendChild(s);"
        "const d = document.createElement('div'); d.innerHTML = arguments[0];"
        "document.body.appendChild(d);",
        XSS_NAME,
    )

    def reported() -> list[str]:
        text = log.log.read_text(encoding="utf-8", errors="replace")[len(before) :]
        return [line for line in text.splitlines() if "CSP blocked" in line]

    wait_for("the CSP reports", lambda: len(reported()) >= 2, timeout=15, interval=0.2)
    lines = reported()
    assert any("inline by script-src-elem" in line for line in lines), lines
    assert any("inline by script-src-attr" in line for line in lines), lines
    assert all(f"/requests/{pending[:8]}" in line for line in lines), lines
    assert_no_dialog(rita)
    assert rita.title != "ran"
    everything = log.log.read_text(encoding="utf-8", errors="replace")
    assert "Tables" not in everything and "onerror" not in everything and pending not in everything


def test_csp_reports_are_bounded_and_rate_limited(console_world: ConsoleWorld) -> None:
    from rt_client.console.csp import MAX_BYTES, RATE

    log = console_world.new.process
    assert log is not None
    before = len(log.log.read_text(encoding="utf-8", errors="replace"))
    report = {
        "csp-report": {
            "document-uri": "http://127.0.0.1/requests/x?student=Ana+Garcia",
            "effective-directive": "script-src-elem",
            "blocked-uri": "inline",
            "script-sample": "Ana Garcia",
        }
    }
    with httpx.Client(base_url=console_world.new.url, timeout=10) as client:
        huge = client.post(
            "/csp-report",
            content=b"{" + b" " * (MAX_BYTES + 1) + b"}",
            headers={"content-type": "application/csp-report"},
        )
        assert huge.status_code == 204
        for _ in range(RATE + 5):
            reply = client.post(
                "/csp-report", json=report, headers={"content-type": "application/csp-report"}
            )
            assert reply.status_code == 204
        assert client.post("/csp-report", content=b"not json").status_code == 204
    text = log.log.read_text(encoding="utf-8", errors="replace")[before:]
    lines = [line for line in text.splitlines() if "CSP blocked" in line]
    assert len(lines) == RATE, len(lines)  # the rest counted, not logged
    assert lines[0] == "console: CSP blocked inline by script-src-elem on /requests/x"
    assert "Ana" not in text and "Traceback" not in text


def test_the_audit_log_is_for_admins(
    console_world: ConsoleWorld, pending: str, browser: Callable[[], Any]
) -> None:
    _, cy = http_login(console_world.new, "cy")  # a requester
    _refused(cy.get("/audit"), 403, "for administrators")
    ann = browser()
    login(ann, console_world.new, "ann", path="/audit")
    audit = ann.find_element(By.ID, "audit").text
    assert "setup" in audit and "create" in audit.lower()  # the pending request's creation
    check_page(ann, "audit")


def test_the_district_refuses_an_answer_from_a_requester_role(
    console_world: ConsoleWorld, pending: str
) -> None:
    """The role is checked where the state is too: a client on A's socket that says its
    staff member is a requester (or names no known role) cannot approve or reject."""
    import grpc

    a = console_world.pair.a
    before = snapshot(a)
    for role in ("requester", "superuser"):
        calls = (
            lambda: a.rpc.ApproveRequest(
                registrar_pb2.ApproveRequestRequest(
                    request_id=pending, student_local_id="A2", actor="rex", actor_role=role
                ),
                timeout=10,
            ),
            lambda: a.rpc.RejectRequest(
                registrar_pb2.RejectRequestRequest(
                    request_id=pending,
                    reason=common_pb2.OTHER,
                    actor="rex",
                    actor_role=role,
                ),
                timeout=10,
            ),
            lambda: a.rpc.ApproveExactMatches(
                registrar_pb2.BatchRef(actor="rex", actor_role=role), timeout=10
            ),
        )
        for call in calls:
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "may not approve or reject" in (refused.value.details() or "")
    assert_unchanged(before, snapshot(a))
    assert a.rpc.GetRequest(registrar_pb2.RequestRef(request_id=pending)).approved is False
