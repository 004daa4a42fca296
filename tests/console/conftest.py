"""The console's browser tests: two real districts (in this process), a real ``rt console``
subprocess for each, and headless Debian Chromium driven by Selenium.

Without Chromium and its driver the tests that need a browser are skipped, except in
CI (``CI=true``), where they fail: a CI run must not pass by testing nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.console import ConsoleProcess
from tests.harness.flow import add_student, small_records
from tests.harness.world import Pair, World

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
XSS_NAME = "<img src=x onerror=alert(1)>"


def _browser_available() -> bool:
    return all(os.access(p, os.X_OK) for p in (CHROMIUM, CHROMEDRIVER))


@pytest.fixture
def _need_browser() -> None:
    if not _browser_available():
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"CI needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium "
                "chromium-driver): the console's browser tests cannot be skipped in CI"
            )
        pytest.skip("needs Debian's chromium and chromium-driver")


@dataclass
class ConsoleWorld:
    world: World
    pair: Pair
    prior: ConsoleProcess  # district A's console: the responder
    new: ConsoleProcess  # district B's console: the requester


@pytest.fixture(scope="session")
def console_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleWorld]:
    """One world for the console's tests (session-wide: its setup is the slow part)."""
    root = tmp_path_factory.mktemp("console")
    world = World.start(root)
    consoles: list[ConsoleProcess] = []
    try:
        pair = world.pair()
        pair.start(pair.a)
        pair.start(pair.b)
        prior = ConsoleProcess(pair.a.enrolled.config.data_dir / "district.toml", root / "a")
        new = ConsoleProcess(pair.b.enrolled.config.data_dir / "district.toml", root / "b")
        prior.add_staff("rita", "responder", "Rita Responder")
        prior.add_staff("rex", "requester", "Rex Requester")
        prior.add_staff("ria", "responder", "Ria Responder")
        # The batch test's own logins: a login uses up a TOTP step of its account (each code
        # once), and a third login within 30 s of two others would wait for the next step.
        prior.add_staff("rosa", "responder", "Rosa Responder")
        prior.add_staff("rob", "requester", "Rob Requester")
        new.add_staff("bea", "requester", "Bea Requester")
        new.add_staff("cy", "requester", "Cy Requester")
        new.add_staff("ann", "admin", "Ann Admin")
        new.add_staff("ada", "admin", "Ada Admin")
        new.add_staff("lou", "requester", "Lou Lockout")
        # Both consoles start (their interpreters load) while the students are added.
        for c in (prior, new):
            consoles.append(c.spawn())
        new.add_staff("bob", "requester", "Bob Requester", cli=True)
        records = small_records(5, n=3)
        add_student(pair.a, "A1", records)
        # B holds HIS row 1 with another mark: a CONFLICT at review.
        add_student(
            pair.b, "B1", {"HIS": [{**records["HIS"][1], "SQ": None, "SRC": "LOCAL", "MK": "Z"}]}
        )
        add_student(pair.b, "B2", ssid="2234567890", first=XSS_NAME, last="Tables")
        add_student(pair.a, "A2", ssid="2234567890", first=XSS_NAME, last="Tables")
        for c in consoles:
            c.wait_up()
        yield ConsoleWorld(world, pair, prior, new)
    finally:
        for c in reversed(consoles):
            c.stop()
        world.close()


@pytest.fixture
def browser(tmp_path: Path, _need_browser: None) -> Iterator[Callable[[], Any]]:
    """``browser()`` opens a fresh headless Chromium (own profile); all are quit at teardown."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opened: list[Any] = []

    def open_browser() -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            f"--user-data-dir={tmp_path / f'profile-{len(opened)}'}",
        ):
            options.add_argument(arg)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        driver.set_page_load_timeout(30)
        driver.implicitly_wait(10)  # a page still loading after a click: wait for its elements
        opened.append(driver)
        return driver

    yield open_browser
    for driver in opened:
        driver.quit()
