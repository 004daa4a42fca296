"""Running a server until it is told to stop: ``rt serve`` and ``rt-registry serve`` alike.

Both servers log the same way and stop gracefully on SIGTERM (a service
manager) or SIGINT (Ctrl-C at a terminal). It lives in ``rt_client`` only
because that is the package both servers depend on; nothing in the protocol
library uses it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import signal
import threading
from datetime import UTC, datetime

__all__ = ["JsonLogFormatter", "configure_logging", "logged_request", "wait_for_stop_signal"]

# The request the current thread works on (the delivery worker sets it per
# outbox item): the ``request`` field of a JSON log line.
logged_request: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "logged_request", default=None
)

# The request a log line is about, where its text names one ("request <uuid>").
_REQUEST_REF = re.compile(
    r"\brequest (?:id )?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)


def configure_logging(log_format: str = "text", district: str = "") -> None:
    """Log INFO and above to stderr: lines of time, level, logger and text, or JSON objects.

    ``log_format`` is ``"text"`` or ``"json"`` (``JsonLogFormatter``; ``district``
    is its ``district`` field, empty for the registry).
    """
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLogFormatter(district))
        logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
        return
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line, always the same fields.

    ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``event`` (the message, as
    the text format writes it: the log says nothing a text line would not, so
    no student data), ``district`` and ``request`` (the request being worked
    on, ``logged_request``, or the one the line names; else null); ``error``
    with the traceback when there is one.
    """

    def __init__(self, district: str = "") -> None:
        super().__init__()
        self._district = district or None

    def format(self, record: logging.LogRecord) -> str:
        event = record.getMessage()
        ref = _REQUEST_REF.search(event)
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": event,
            "district": self._district,
            "request": logged_request.get() or (ref.group(1) if ref else None),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def wait_for_stop_signal(ready: str, log: logging.Logger) -> None:
    """Say ``ready`` on stdout, then block until SIGTERM or SIGINT arrives.

    The handlers are installed before ``ready`` is printed, so whoever waits
    for that line (a test, a supervisor) may signal at once. The caller then
    stops its server. Call from the main thread (Python delivers signals there).
    """
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(ready, flush=True)
    done.wait()
