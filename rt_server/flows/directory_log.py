"""What a district records when the directory log shows a split view (rt_client.tlog).

A split view is evidence that the registry showed another district a different
directory log: it is written to the audit log (no student data: the peer's
district code and what did not match), and the call it came with is refused.
"""

from __future__ import annotations

from collections.abc import Callable

from rt_client.directory import Clock
from rt_server.store._db import Bind
from rt_server.store.audit import write_audit

__all__ = ["SPLIT_VIEW_ACTION", "split_view_recorder"]

SPLIT_VIEW_ACTION = "directory_log_split_view"


def split_view_recorder(engine: Bind, clock: Clock) -> Callable[[str, str], None]:
    """A ``rt_client.tlog`` ``on_split_view`` callback writing the audit row."""

    def record(who: str, what: str) -> None:
        write_audit(
            engine,
            actor="system",
            action=SPLIT_VIEW_ACTION,
            detail=f"seen with {who}: {what}",
            now=clock(),
        )

    return record
