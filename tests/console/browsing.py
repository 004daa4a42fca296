"""What the browser tests do in a page: log in, run axe-core, take a screenshot, find no dialog."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.console.conftest import AXE
from tests.harness.console import PASSWORD, ConsoleProcess

# Filled as the tests run: page name -> axe-core violations by impact.
AXE_RESULTS: dict[str, dict[str, int]] = {}


def follow(driver: Any, element: Any, timeout: float = 20) -> None:
    """Click ``element`` and wait until the page it loads has replaced this one.

    A form's submit returns before the next page is there: reading at once can
    find the old page's elements, gone a moment later (a stale element).
    """
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, timeout).until(expected_conditions.staleness_of(old))
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def login(driver: Any, console: ConsoleProcess, username: str, path: str = "/login") -> None:
    driver.get(console.url + path)
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "code").send_keys(console.code(username))
    follow(driver, driver.find_element(By.ID, "login"))


def axe(driver: Any, page: str) -> list[dict[str, Any]]:
    """Run axe-core (WCAG 2.1 A and AA rules) on the page; the serious and critical violations."""
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    outcome = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
        ".then(r => done({violations: r.violations, passes: r.passes.length}))"
        ".catch(e => done({violations: [{id: 'axe-error', impact: 'critical',"
        " help: String(e), nodes: []}], passes: 0}));"
    )
    assert outcome["passes"] > 10, f"{page}: axe-core checked nothing"
    result = outcome["violations"]
    counts: dict[str, int] = {}
    for v in result:
        counts[v["impact"] or "none"] = counts.get(v["impact"] or "none", 0) + 1
    AXE_RESULTS[page] = counts
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n.get("html", "") for n in v["nodes"]][:3],
        }
        for v in result
        if v["impact"] in ("serious", "critical")
    ]


def check_page(driver: Any, page: str) -> None:
    """axe-core finds no serious or critical violation; a screenshot if asked for; no dialog."""
    assert_no_dialog(driver)
    bad = axe(driver, page)
    assert not bad, f"{page}: {json.dumps(bad, indent=1)}"
    folder = os.environ.get("RT_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, max(800, min(int(height) + 200, 2600)))
        driver.save_screenshot(str(Path(folder) / f"{page}.png"))
        driver.set_window_size(1280, 1000)


def assert_no_dialog(driver: Any) -> None:
    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    raise AssertionError(f"the page raised a dialog: {text!r}")
