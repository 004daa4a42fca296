"""Following a request while it moves: ``rt approve --wait`` and ``rt wait``.

Both poll the district's ``GetRequest`` and say, as it happens, what the
request waits for and why: in a terminal, a progress bar with a line above it
each time the reason changes; piped, one line on stderr per change (stdout
keeps the answer, or its JSON). Ctrl-C stops the waiting, never the work: the
request goes on in the background, and ``rt wait ID`` (or ``rt approve ID
--wait`` again) re-attaches to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from protos.rt.v1 import common_pb2, registrar_pb2
from rt_client.cli import render
from rt_client.cli.session import EXIT_ERROR, EXIT_OK, CliError, Session

__all__ = ["EXIT_INTERRUPTED", "add_wait_command", "cmd_wait", "follow", "under_way"]

EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C
_POLL_SECONDS = 0.25
DEFAULT_TIMEOUT = 600.0

Detail = registrar_pb2.RequestDetail
_S = common_pb2.RequestStatus


def under_way(d: Detail) -> str | None:
    """What the request waits for that will happen without us (None: nothing).

    Whatever waits for a registrar here (a decision, a review and import) or
    has ended is not under way: waiting for it would never end.
    """
    r = d.summary
    other = f"district {r.other_district}"
    if r.direction == registrar_pb2.INBOUND:
        if r.status == _S.PENDING and d.approved:
            return f"the delivery of the records to {other}"
        if r.status == _S.SENT:
            return f"{other} to import the records"
        return None
    if r.status == _S.QUEUED:
        return f"the request to reach {other}"
    if r.status == _S.PENDING:
        return f"{other} to decide and send the records"
    return None


def _why_not(d: Detail) -> str:
    r = d.summary
    status = render.status_name(r.status)
    if r.direction == registrar_pb2.INBOUND and r.status == _S.PENDING:
        return f"request {r.request_id} waits for a decision here ('rt approve' or 'rt reject')"
    if r.direction == registrar_pb2.OUTBOUND and r.status == _S.DATA_RECEIVED:
        return f"the records of request {r.request_id} are here ('rt review', then 'rt import')"
    if r.status == _S.FAILED:
        return f"request {r.request_id} is FAILED ('rt retry' starts it over)"
    return f"request {r.request_id} is {status}; nothing more is under way"


def exit_code(d: Detail) -> int:
    """Non-zero when the request ended without getting where it was going."""
    return EXIT_ERROR if d.summary.status in (_S.FAILED, _S.EXPIRED) else EXIT_OK


def _reason(d: Detail, now: dt.datetime) -> tuple[str | None, tuple[Any, ...]]:
    """(a line saying why it waits, the key of what that line depends on): a delivery
    first, else the first send that is waiting."""
    sends = sorted(d.pending_sends, key=lambda p: p.kind != "delivery")
    if not sends:
        return None, ()
    send = sends[0]
    key = (send.kind, send.attempts, send.last_error, send.sending, send.failed)
    if not send.attempts and not send.sending:
        return None, key  # queued, not tried yet: nothing to explain
    return render.describe_send(send, now), key


class _Out:
    """Where the lines go: above a progress bar in a terminal, else one per line on stderr."""

    def __init__(self, s: Session) -> None:
        self.tty = s.err.is_terminal
        self._s = s
        self._bar: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> _Out:
        if self.tty:
            columns = [
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeElapsedColumn(),
            ]
            self._bar = Progress(*columns, console=self._s.err, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("waiting", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def line(self, text: str) -> None:
        console = self._bar.console if self._bar is not None else self._s.err
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    def bar(self, description: str, total: int = 0, done: int = 0) -> None:
        if self._bar is not None:
            self._bar.update(
                self._task, description=description, total=total or None, completed=done
            )


def follow(
    s: Session,
    first: Detail,
    done: Callable[[Detail], bool],
    timeout: float = DEFAULT_TIMEOUT,
) -> Detail:
    """Poll the request of ``first`` until ``done``, telling each change. Returns the last detail.

    Raises ``CliError`` after ``timeout`` seconds and ``KeyboardInterrupt`` on Ctrl-C
    (``interrupted`` says what to do then).
    """
    request_id = first.summary.request_id
    deadline = time.monotonic() + timeout
    d = first
    said: tuple[Any, ...] | None = None
    status = d.summary.status
    step = -1
    with _Out(s) as out:
        what = under_way(d)
        if what:
            out.line(
                f"Request {request_id} is {render.status_name(status)}: waiting for {what} "
                "(Ctrl-C stops the waiting, not the request)."
            )
        while True:
            if d.summary.status != status:
                new = render.status_name(d.summary.status)
                out.line(f"Status {render.status_name(status)} -> {new}.")
                status = d.summary.status
            if done(d):
                return d
            now = dt.datetime.now(dt.UTC)
            reason, key = _reason(d, now)
            if key != said:
                said = key
                if reason:
                    out.line(reason)
            total, sent = d.delivery_bytes_total, d.delivery_bytes_done
            delivering = d.approved and d.summary.status == _S.PENDING
            if not out.tty and total and delivering:
                # Piped: a line per tenth of the delivery, not per poll.
                tenth = min(10, sent * 10 // total)
                if tenth != step:
                    step = tenth
                    out.line(f"Delivered {sent} of {total} bytes ({tenth * 10} %).")
            if reason and not any(p.sending for p in d.pending_sends):
                out.bar(f"waiting: {reason.rpartition('; ')[2]}", total, sent)
            else:
                out.bar("delivering" if total else "waiting", total, sent)
            if time.monotonic() > deadline:
                raise CliError(
                    f"still waiting after {timeout:.0f} s; the request goes on in the "
                    f"background: 'rt show {request_id}', or 'rt wait {request_id}' again"
                )
            time.sleep(_POLL_SECONDS)
            d = _get(s, request_id)


def interrupted(s: Session, request_id: str) -> int:
    """Ctrl-C: say that only the waiting stopped, and how to pick it up again."""
    s.err.print(
        f"Stopped waiting. Request {request_id} goes on in the background; follow it again "
        f"with 'rt wait {request_id}'.",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return EXIT_INTERRUPTED


def _get(s: Session, request_id: str) -> Detail:
    detail: Detail = s.call(
        "GetRequest", registrar_pb2.RequestRef(request_id=request_id, actor=s.actor)
    )
    return detail


def wait_for_delivery(s: Session, first: Detail) -> int:
    """``rt approve --wait``: follow the delivery of an approved request, then show it."""
    try:
        d = follow(
            s,
            first,
            lambda d: d.summary.status != _S.PENDING or not d.approved,
        )
    except KeyboardInterrupt:
        return interrupted(s, first.summary.request_id)
    s.emit(d, lambda: render.render_detail(s.console, d))
    return exit_code(d)


def reattach(s: Session, request_id: str) -> int | None:
    """``rt approve ID --wait`` on a request already approved: follow it instead of failing.

    Returns None when the request is not approved yet (approve it as asked).
    """
    d = _get(s, request_id)
    if d.summary.direction != registrar_pb2.INBOUND or not d.approved:
        return None
    if d.summary.status == _S.PENDING:
        s.err.print(
            f"Request {request_id} is already approved (that approval's student and tables "
            "stand); following its delivery.",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return wait_for_delivery(s, d)
    hint = " ('rt retry' starts it over)" if d.summary.status == _S.FAILED else ""
    s.err.print(
        f"Request {request_id} is already approved and {render.status_name(d.summary.status)}"
        f"{hint}.",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    s.emit(d, lambda: render.render_detail(s.console, d))
    return exit_code(d)


def cmd_wait(s: Session) -> int:
    """``rt wait ID``: wait for the request's next status (a delivery, a decision, an import)."""
    request_id = s.args.request_id
    first = _get(s, request_id)
    if under_way(first) is None:
        s.err.print(f"Nothing to wait for: {_why_not(first)}.", markup=False, soft_wrap=True)
        s.emit(first, lambda: render.render_detail(s.console, first))
        return exit_code(first)
    start = first.summary.status
    try:
        d = follow(s, first, lambda d: d.summary.status != start, s.args.timeout)
    except KeyboardInterrupt:
        return interrupted(s, request_id)
    s.emit(d, lambda: render.render_detail(s.console, d))
    return exit_code(d)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 7 * 24 * 3600:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"give seconds, more than 0 and at most 604800: {text!r}")
    return value


def add_wait_command(sub: Any, common: Any) -> None:
    """Mount ``rt wait`` on ``rt``'s subparsers."""
    wt = sub.add_parser(
        "wait",
        parents=[common],
        help="wait for a request's next status (its delivery, decision or import), saying why",
    )
    wt.add_argument("request_id")
    wt.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        help=f"give up waiting after this many seconds (default {DEFAULT_TIMEOUT:.0f})",
    )
    wt.set_defaults(func=cmd_wait, session=True)
