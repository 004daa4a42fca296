"""Test-only fault hooks, read from the environment; every one is off unless set.

The fault tests (``tests/faults/``) run district servers as real subprocesses
and kill them at chosen moments. To make "mid-stream" and "after the records
arrived but before the receipt was recorded" deterministic, the server can be
slowed or paused at a few named points. Nothing here changes what the server
does, only when; with no ``RT_TEST_*`` variable set every hook is a no-op.
Never set these in production.

- ``RT_TEST_FRAME_DELAY_MS=N``: the sender sleeps N ms before each ciphertext
  frame of a delivery.
- ``RT_TEST_PAUSE_AT=point[,point...]``: the server logs
  ``test hook: paused at <point>`` and then blocks at that point (for an hour:
  the test kills it). Points: ``delivery.after_reply`` (the receiver's receipt
  has arrived; nothing is recorded yet), ``import.before_commit`` (every row of
  an import is written; the transaction is not committed yet).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Final

log = logging.getLogger("rt_server.testhooks")

FRAME_DELAY_ENV: Final = "RT_TEST_FRAME_DELAY_MS"
PAUSE_AT_ENV: Final = "RT_TEST_PAUSE_AT"
POINTS: Final = frozenset({"delivery.after_reply", "import.before_commit"})
_PAUSE_SECONDS: Final = 3600.0


def frame_delay() -> None:
    """Before each ciphertext frame a sender yields."""
    value = os.environ.get(FRAME_DELAY_ENV)
    if value:
        time.sleep(int(value) / 1000)


def pause(point: str) -> None:
    """Block here if ``point`` is named in ``RT_TEST_PAUSE_AT``."""
    assert point in POINTS, point
    names = os.environ.get(PAUSE_AT_ENV, "")
    if point in {n.strip() for n in names.split(",")}:
        log.warning("test hook: paused at %s", point)
        for handler in logging.getLogger().handlers:
            handler.flush()
        time.sleep(_PAUSE_SECONDS)
