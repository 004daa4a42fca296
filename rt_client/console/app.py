"""The console's Starlette application: who may do what, and the routes.

Every page is rendered on the server (Jinja2, autoescaped) and works without
JavaScript. Every change is a POST carrying the session's CSRF token, and is
checked against the staff member's role here, in ``permits`` (the one place),
before the Registrar service is called with that person as the ``actor``.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rt_client.cli.session import CliError, Session
from rt_client.console.csp import REPORT_PATH, CspReports
from rt_client.console.staff import LoginRefused, StaffStore
from rt_client.console.web import (
    COOKIE,
    SecurityHeaders,
    WebSession,
    WebSessions,
    csrf_ok,
    safe_next,
    template_env,
)

__all__ = ["ConsoleApp", "permits"]

# What each role may change (Aeries' permissions: who asks, who answers).
_MAY: Final = {
    "requester": {"create", "import", "message-out"},
    "responder": {"approve", "reject", "message-in"},
    "admin": {"create", "import", "message-out", "approve", "reject", "message-in", "audit"},
}
_STATUS_FOR_CODE: Final = {
    "not_found": 404,
    "invalid_argument": 400,
    "failed_precondition": 409,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
}

Handler = Callable[[Request, WebSession], Awaitable[Response]]


def permits(role: str, action: str) -> bool:
    """Whether ``role`` may do ``action`` (the one authorization check of the console)."""
    return action in _MAY.get(role, set())


class Refused(Exception):
    """A change refused before anything was called (status, message for the person)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConsoleApp:
    """The routes over one district's Registrar service (``config_path`` names it)."""

    def __init__(
        self,
        config_path: Path,
        staff: StaffStore,
        *,
        secure_cookies: bool = True,
        sessions: WebSessions | None = None,
    ) -> None:
        self.registrar = Session(
            argparse.Namespace(config=str(config_path), actor="console", json=False)
        )
        self.staff = staff
        self.sessions = sessions or WebSessions()
        self.secure_cookies = secure_cookies
        self.env = template_env()
        from rt_client.console import pages

        self.pages = pages.Pages(self)
        self.csp_reports = CspReports()

    def asgi(self) -> Any:
        p = self.pages
        routes = [
            Route("/login", self.login_form, methods=["GET"]),
            Route(REPORT_PATH, self.csp_reports.endpoint, methods=["POST"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.change(self.logout, None), methods=["POST"]),
            Route("/", self.read(p.dashboard)),
            Route("/requests/new", self.read(p.new_request_form)),
            Route("/requests/new", self.change(p.create_request, "create"), methods=["POST"]),
            Route("/requests/{rid}", self.read(p.request_page)),
            Route("/requests/{rid}/review", self.read(p.review_page)),
            Route("/requests/{rid}/approve", self.change(p.approve, "approve"), methods=["POST"]),
            Route("/requests/{rid}/reject", self.change(p.reject, "reject"), methods=["POST"]),
            Route("/requests/{rid}/import", self.change(p.import_, "import"), methods=["POST"]),
            Route("/requests/{rid}/messages", self.change(p.post_message, None), methods=["POST"]),
            Route(
                "/batch/approve-exact", self.change(p.approve_exact, "approve"), methods=["POST"]
            ),
            Route("/batch/requests", self.change(p.create_from_csv, "create"), methods=["POST"]),
            Route("/batch/import-new", self.change(p.import_all_new, "import"), methods=["POST"]),
            Route("/disclosures", self.read(p.disclosures)),
            Route("/disclosures.csv", self.read(p.disclosures_csv)),
            Route("/audit", self.read(p.audit, action="audit")),
            Mount(
                "/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static"
            ),
        ]
        app = Starlette(
            routes=routes, exception_handlers={404: self.not_found, 405: self.not_found}
        )
        return SecurityHeaders(app)

    # --- calling the district ---------------------------------------------------------------

    async def rpc(self, method: str, message: Any) -> Any:
        """A Registrar call, off the event loop. Raises ``CliError`` (a message for a person)."""
        return await anyio.to_thread.run_sync(self.registrar.call, method, message)

    # --- rendering --------------------------------------------------------------------------

    def render(
        self, request: Request, ws: WebSession, template: str, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        flash, ws.flash = ws.flash, []
        html = self.env.get_template(template).render(
            staff=ws.staff, csrf=ws.csrf, flash=flash, path=request.url.path, **ctx
        )
        response = HTMLResponse(html, status_code=status)
        self._set_cookie(response, ws)
        return response

    def _set_cookie(self, response: Response, ws: WebSession) -> None:
        response.set_cookie(
            COOKIE,
            ws.sid,
            httponly=True,
            secure=self.secure_cookies,
            samesite="strict",
            path="/",
        )

    def redirect(self, ws: WebSession, to: str) -> Response:
        response = RedirectResponse(to, status_code=303)
        self._set_cookie(response, ws)
        return response

    def session_of(self, request: Request) -> WebSession:
        return self.sessions.get(request.cookies.get(COOKIE)) or self.sessions.new()

    def error_page(self, request: Request, ws: WebSession, status: int, message: str) -> Response:
        return self.render(request, ws, "error.html", status=status, message=message)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return self.error_page(request, self.session_of(request), 404, "There is no such page.")

    # --- the two kinds of route -------------------------------------------------------------

    def read(
        self, handler: Handler, action: str | None = None
    ) -> Callable[[Request], Awaitable[Response]]:
        """A page for a logged-in person (whose role permits ``action``, if given); others go
        to the login page (and come back)."""

        async def endpoint(request: Request) -> Response:
            ws = self.session_of(request)
            if ws.staff is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = RedirectResponse("/login?" + _query(next=target), status_code=303)
                self._set_cookie(response, ws)
                return response
            if action is not None and not permits(ws.staff.role, action):
                return self.error_page(
                    request, ws, 403, f"This page is for administrators (you are {ws.staff.role})."
                )
            return await self._guarded(request, ws, handler)

        return endpoint

    def change(
        self, handler: Handler, action: str | None
    ) -> Callable[[Request], Awaitable[Response]]:
        """A POST that changes something: logged in, the CSRF token, the role; else refused."""

        async def endpoint(request: Request) -> Response:
            ws = self.session_of(request)
            form = await request.form(max_files=1)
            if ws.staff is None:
                return self.error_page(
                    request, ws, 401, "You are not logged in (or were logged out): log in again."
                )
            if not csrf_ok(ws, form.get("csrf")):
                return self.error_page(
                    request,
                    ws,
                    403,
                    "This form has expired or did not come from this console: nothing was "
                    "changed. Go back, reload the page and try again.",
                )
            if action is not None and not permits(ws.staff.role, action):
                return self.error_page(
                    request,
                    ws,
                    403,
                    f"Your role ({ws.staff.role}) may not {action.replace('-', ' ')}: "
                    "nothing was changed. Ask an administrator if you need it.",
                )
            request.state.form = form
            return await self._guarded(request, ws, handler)

        return endpoint

    async def _guarded(self, request: Request, ws: WebSession, handler: Handler) -> Response:
        try:
            return await handler(request, ws)
        except Refused as exc:
            return self.error_page(request, ws, exc.status, exc.message)
        except CliError as exc:
            status = _STATUS_FOR_CODE.get(exc.code, 502)
            return self.error_page(request, ws, status, str(exc))

    # --- logging in and out -----------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        ws = self.session_of(request)
        nxt = safe_next(request.query_params.get("next"))
        return self.render(request, ws, "login.html", next=nxt, error="")

    async def login(self, request: Request) -> Response:
        ws = self.session_of(request)
        form = await request.form(max_files=0)
        nxt = safe_next(str(form.get("next", "")))
        if not csrf_ok(ws, form.get("csrf")):
            return self.render(
                request,
                ws,
                "login.html",
                status=403,
                next=nxt,
                error="The login form expired: please try again.",
            )
        try:
            account = await anyio.to_thread.run_sync(
                self.staff.authenticate,
                str(form.get("username", "")).strip(),
                str(form.get("password", "")),
                str(form.get("code", "")),
            )
        except LoginRefused as exc:
            return self.render(request, ws, "login.html", status=401, next=nxt, error=str(exc))
        self.sessions.end(ws)
        fresh = self.sessions.new(account)
        return self.redirect(fresh, nxt)

    async def logout(self, request: Request, ws: WebSession) -> Response:
        self.sessions.end(ws)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response


def _query(**params: str) -> str:
    from urllib.parse import urlencode

    return urlencode(params)
