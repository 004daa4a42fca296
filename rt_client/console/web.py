"""The console's web plumbing: sessions, CSRF, security headers, safe redirects, templates.

Sessions are held in the console process (a random 256-bit id in the cookie,
nothing else): logging out or an idle timeout ends them on the server, so a
copied cookie is worth nothing afterwards. Every visitor, logged in or not,
has a session with its own CSRF token (the login form has one too); logging
in replaces the session id (no session fixation).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import jinja2
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rt_client.console.staff import StaffAccount

__all__ = [
    "COOKIE",
    "CSP",
    "IDLE_SECONDS",
    "SecurityHeaders",
    "WebSession",
    "WebSessions",
    "csrf_ok",
    "safe_next",
    "template_env",
]

COOKIE: Final = "rt_console_session"
IDLE_SECONDS: Final = 15 * 60
# No inline script or style anywhere: every script and style sheet is a file of ours. What a
# browser blocks, it reports to /csp-report (rt_client/console/csp.py). Only report-uri: with
# report-to beside it Chromium ignores report-uri and batches its reports for a minute.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'; "
    "report-uri /csp-report"
)
_HEADERS: Final = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


@dataclass
class WebSession:
    sid: str
    csrf: str
    last_seen: float
    staff: StaffAccount | None = None
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)


class WebSessions:
    """The live sessions of this console process, by id; idle ones expire."""

    def __init__(self, clock: Callable[[], float] = time.time, idle: float = IDLE_SECONDS) -> None:
        self._by_id: dict[str, WebSession] = {}
        self._lock = threading.Lock()
        self.clock = clock
        self.idle = idle

    def get(self, sid: str | None) -> WebSession | None:
        now = self.clock()
        with self._lock:
            session = self._by_id.get(sid or "")
            if session is None:
                return None
            if now - session.last_seen > self.idle:
                del self._by_id[session.sid]
                return None
            session.last_seen = now
            return session

    def new(self, staff: StaffAccount | None = None) -> WebSession:
        session = WebSession(
            sid=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            last_seen=self.clock(),
            staff=staff,
        )
        with self._lock:
            self._by_id[session.sid] = session
        return session

    def end(self, session: WebSession) -> None:
        with self._lock:
            self._by_id.pop(session.sid, None)


def csrf_ok(session: WebSession, form_token: Any) -> bool:
    return isinstance(form_token, str) and hmac.compare_digest(
        form_token.encode(), session.csrf.encode()
    )


def safe_next(target: str | None) -> str:
    """``?next=`` only as a path on this site ("/..."), never another host; else "/"."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


class SecurityHeaders:
    """ASGI middleware: the same security headers on every response (pages, files, errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in _HEADERS if k not in names
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def template_env() -> jinja2.Environment:
    """Jinja2 with autoescape on for every template (every value escaped)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def client_wants(request: Request) -> str:
    return request.headers.get("accept", "")
