"""The CSP report endpoint's bounds, on the real Starlette app (no district needed):
only the rule, the kind of thing blocked and the page's path are logged; a flood is
counted, then summed up in one line once reports are logged again."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from rt_client.console.csp import RATE, REPORT_PATH, CspReports


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _report(
    blocked: str, page: str = "http://127.0.0.1:8080/requests/0123456789abcdef?q=Ana"
) -> dict[str, Any]:
    return {
        "csp-report": {
            "document-uri": page,
            "effective-directive": "script-src-elem",
            "blocked-uri": blocked,
            "script-sample": "alert('Ana Garcia')",
        }
    }


class _Client:
    """POSTs to the ASGI app in this process (httpx's ASGI transport)."""

    def __init__(self, app: Any) -> None:
        self.transport = httpx.ASGITransport(app=app)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url="http://t") as c:
                return await c.post(path, **kwargs)

        return anyio.run(call)


def test_reports_are_logged_without_page_content(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    reports = CspReports(clock)
    app = Starlette(routes=[Route(REPORT_PATH, reports.endpoint, methods=["POST"])])
    client = _Client(app)
    caplog.set_level(logging.WARNING, "rt_client.console.csp")
    for blocked in ("inline", "https://evil.example/x.js?student=Ana", "data:text/html,Ana", "%%"):
        assert client.post(REPORT_PATH, json=_report(blocked)).status_code == 204
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "CSP blocked inline by script-src-elem on /requests/01234567",
        "CSP blocked https://evil.example by script-src-elem on /requests/01234567",
        "CSP blocked data by script-src-elem on /requests/01234567",
        "CSP blocked ? by script-src-elem on /requests/01234567",
    ]
    caplog.clear()
    for _ in range(RATE + 7):
        client.post(REPORT_PATH, json=_report("inline"))
    assert len(caplog.records) == RATE - 4 and reports.dropped == 11
    caplog.clear()
    clock.now += 61  # a minute later: one line for what was not logged, then the report
    client.post(REPORT_PATH, json=_report("eval"))
    assert [r.getMessage() for r in caplog.records] == [
        f"11 CSP reports were not logged (over {RATE} a minute)",
        "CSP blocked eval by script-src-elem on /requests/01234567",
    ]
    assert "Ana" not in caplog.text
    caplog.clear()
    client.post(REPORT_PATH, json=_report("inline", "http://h/disclosures.csv"))
    client.post(REPORT_PATH, json=_report("inline", "http://h/students/Ana%20Garcia/x"))
    assert [r.getMessage().rsplit(" ", 1)[1] for r in caplog.records] == [
        "/disclosures.csv",
        "/students/?/x",
    ]
