"""Content-Security-Policy violation reports: where the browser tells the console it blocked
something (an injected script, an inline event handler) on one of its pages.

The endpoint takes no session and no CSRF token (the browser sends the report by
itself, from any page, the login page too); so it is bounded instead: a report
is read up to ``MAX_BYTES`` (longer ones are dropped unread), and at most
``RATE`` reports per minute are recorded for the whole console (the rest are
counted, not logged). What is logged is only which rule blocked what kind of
thing on which console path: never the script sample, the query string or
anything else from the page, which may carry a student's name.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["MAX_BYTES", "RATE", "REPORT_PATH", "CspReports"]

REPORT_PATH: Final = "/csp-report"
MAX_BYTES: Final = 8 * 1024
RATE: Final = 30  # recorded reports per minute, for the whole console
_WINDOW: Final = 60.0
_KINDS: Final = ("inline", "eval", "wasm-eval", "data", "blob", "self")

log = logging.getLogger("rt_client.console.csp")


def _word(value: Any, limit: int = 40) -> str:
    """A directive name: letters, digits and dashes only (else "?")."""
    text = str(value or "")[:limit]
    return text if text and all(c.isalnum() or c == "-" for c in text) else "?"


def _blocked(value: Any) -> str:
    """What was blocked, as a kind ("inline", "eval") or a URL's scheme and host: no path."""
    text = str(value or "")
    if text in _KINDS:
        return text
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
    except ValueError:
        return "?"
    if parts.scheme in ("http", "https") and host:
        plain = all(c.isalnum() or c in ".-" for c in host) and len(host) <= 80
        return f"{parts.scheme}://{host if plain else '?'}"
    return _word(parts.scheme) if parts.scheme else "?"


def _page(value: Any) -> str:
    """The console page's path, without its query; a request id is cut to its short form."""
    try:
        path = urlsplit(str(value or "")).path[:200] or "?"
    except ValueError:
        return "?"
    return "/".join(_segment(p) for p in path.split("/"))


def _segment(part: str) -> str:
    if len(part) > 8 and all(c in "0123456789abcdef-" for c in part.lower()):
        return part[:8]  # a request id: its short form
    if len(part) > 40 or not all(c.isalnum() or c in "-_.~" for c in part):
        return "?"
    return part


class CspReports:
    """The report endpoint of one console process, with its rate limit and its tallies."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self.recorded = 0
        self.dropped = 0
        self._unlogged = 0  # dropped by the rate limit since the last report logged

    def _admit(self) -> bool:
        now = self.clock()
        with self._lock:
            while self._times and now - self._times[0] > _WINDOW:
                self._times.popleft()
            if len(self._times) >= RATE:
                self.dropped += 1
                self._unlogged += 1
                return False
            self._times.append(now)
            self.recorded += 1
            unlogged, self._unlogged = self._unlogged, 0
        if unlogged:
            log.warning("%d CSP reports were not logged (over %d a minute)", unlogged, RATE)
        return True

    async def endpoint(self, request: Request) -> Response:
        """``POST /csp-report`` (``report-uri``): always 204, whatever was sent."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BYTES:
            self.dropped += 1
            return Response(status_code=204)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BYTES:
                self.dropped += 1
                return Response(status_code=204)
        try:
            data = json.loads(bytes(body))
        except ValueError:
            return Response(status_code=204)
        reports = data if isinstance(data, list) else [data]
        for item in reports[:10]:
            report = (
                (item.get("csp-report") or item.get("body")) if isinstance(item, dict) else None
            )
            if not isinstance(report, dict) or not self._admit():
                continue
            directive = report.get("effective-directive") or report.get("effectiveDirective")
            blocked = report.get("blocked-uri") or report.get("blockedURL")
            page = report.get("document-uri") or report.get("documentURL")
            log.warning(
                "CSP blocked %s by %s on %s", _blocked(blocked), _word(directive), _page(page)
            )
        return Response(status_code=204)
