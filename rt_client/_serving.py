"""Running a server until it is told to stop: ``rt serve`` and ``rt-registry serve`` alike.

Both servers log the same way and stop gracefully on SIGTERM (a service
manager) or SIGINT (Ctrl-C at a terminal). It lives in ``rt_client`` only
because that is the package both servers depend on; nothing in the protocol
library uses it.
"""

from __future__ import annotations

import logging
import signal
import threading

__all__ = ["configure_logging", "wait_for_stop_signal"]


def configure_logging() -> None:
    """Log INFO and above to stderr, with time, level and logger name."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


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
