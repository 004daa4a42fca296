"""SQLite: checkpoint the write-ahead log from a thread of its own, off the commit path.

By default the connection whose commit takes the WAL past 1,000 pages copies
the WAL into the database file there and then, fsyncs included: inside a
registrar's call or a peer's delivery, every few transfers. A district server
instead checkpoints every second from this thread, PASSIVE (it waits for no
writer and no reader, and blocks none); the engine's own automatic checkpoint
stays as a backstop for a much larger WAL (``make_engine``), should this
thread fall behind. PostgreSQL checkpoints by itself: nothing to do there.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.engine import Engine

log = logging.getLogger("rt_server.store")


class WalCheckpointer:
    def __init__(self, engine: Engine, interval_seconds: float = 1.0) -> None:
        self._engine = engine
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)

    def start(self) -> None:
        if self._engine.dialect.name == "sqlite":
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                raw = self._engine.raw_connection()
                try:
                    driver = raw.driver_connection
                    assert driver is not None
                    # The driver is in autocommit (make_engine): no transaction around it.
                    driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
                finally:
                    raw.close()
            except Exception:  # noqa: BLE001 - the backstop checkpoints; try again later
                log.warning("could not checkpoint the database's write-ahead log", exc_info=True)
