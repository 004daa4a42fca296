"""One district as a real ``rt serve`` subprocess: started, killed, cut off and restarted.

A ``DistrictProcess`` is enrolled (``World.process``) with its config on disk;
``start()`` runs ``rt serve --config`` for it, so a test can SIGKILL or SIGTERM
it at any moment and start it again on the same data directory. The test-only
knobs of ``rt_server._testhooks`` (``RT_TEST_FRAME_DELAY_MS``,
``RT_TEST_PAUSE_AT``) are passed only to the start that asks for them.

Tests talk to it as its registrar does (the ``Registrar`` service on its Unix
socket) and read its database directly, read-only, to check what was and was
not written. Every wait polls with a deadline.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import select
from sqlalchemy.engine import Engine

from protos.rt.v1 import common_pb2, registrar_pb2, registrar_pb2_grpc
from rt_client.config import DistrictConfig, write_config
from rt_server.core.tables import ALL_TABLES
from rt_server.store import READ_ONLY
from rt_server.store.engine import make_engine
from rt_server.store.schema import RECORD_TABLES
from scripts.loopback import STOP_TIMEOUT, ServerProcess, health_ok, spawn, wait_for

RPC_TIMEOUT = 30.0
STARTUP_TIMEOUT = 30.0
WAIT_TIMEOUT = 60.0
BOOKKEEPING = {"PID", "SQ", "SRC"}
TEST_HOOKS = ("RT_TEST_FRAME_DELAY_MS", "RT_TEST_PAUSE_AT")

Status = common_pb2.RequestStatus


def rt_command() -> list[str]:
    """The ``rt`` command of the Python running the tests (its virtualenv's script)."""
    script = Path(sys.executable).parent / "rt"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from rt_client.cli import main; raise SystemExit(main())"]


class DistrictProcess:
    """One district: enrolled, its config on disk; ``start()`` runs ``rt serve`` for it."""

    def __init__(self, config: DistrictConfig, config_path: Path, school: str) -> None:
        self.config = config
        self.config_path = config_path
        self.code = config.district_code
        self.school = school
        self.log_path = config.data_dir / "server.log"
        self.server: ServerProcess | None = None
        self.starts = 0
        self._channel: grpc.Channel | None = None
        self._stub: registrar_pb2_grpc.RegistrarStub | None = None
        self._engine: Engine | None = None
        self._stopping = False  # SIGTERM sent by begin_stop, exit not yet awaited

    # --- configuration ---------------------------------------------------------

    def reconfigure(self, **fields: Any) -> None:
        """Change settings for the next start (the config file is rewritten)."""
        self.config = dataclasses.replace(self.config, **fields)
        write_config(self.config, self.config_path)

    # --- the process -------------------------------------------------------------

    def start(
        self, env: Mapping[str, str] | None = None, wait: bool = True, args: Sequence[str] = ()
    ) -> DistrictProcess:
        """Run ``rt serve`` (``args``: more of its options), by default until it is ready."""
        assert not self.running, f"district {self.code} is already running"
        self.starts += 1
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for name in TEST_HOOKS:
            if name not in (env or {}):
                full_env.pop(name, None)
        self.server = spawn(
            f"district-{self.code}",
            [*rt_command(), "serve", "--config", str(self.config_path), *args],
            self.log_path,
            env=full_env,
            banner=f"\n===== start {self.starts} {dict(env or {})} =====\n",
        )
        if wait:
            self.wait_ready()
        return self

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.alive()

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        def serving() -> bool:
            if not self.running:
                raise AssertionError(
                    f"district {self.code} exited while starting:\n{self.log_tail()}"
                )
            return health_ok(f"unix:{self.config.registrar_socket}")

        wait_for(f"district {self.code} to serve", serving, timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        assert self.server is not None
        self.server.popen.send_signal(signal.SIGKILL)
        self.server.popen.wait(10)
        self._drop_channel()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, as an init system stops it; returns the exit status."""
        assert self.server is not None
        self.server.popen.send_signal(signal.SIGTERM)
        try:
            return self.server.popen.wait(timeout)
        finally:
            self._drop_channel()

    def begin_stop(self) -> None:
        """SIGTERM without waiting: ``stop()`` then waits for the exit (several districts
        shut down side by side, each taking its time, rather than one after another)."""
        if self.server is not None and self.server.alive():
            self.server.popen.send_signal(signal.SIGTERM)
            self._stopping = True

    def stop(self) -> None:
        if self.server is not None:
            if self._stopping:
                try:
                    self.server.popen.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.server.popen.kill()
                    self.server.popen.wait(5)
                self._stopping = False
            else:
                self.server.stop()
        self._drop_channel()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _drop_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None

    # --- its log -------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, text: str, timeout: float = WAIT_TIMEOUT, after: int = 0) -> int:
        """Wait for ``text`` in the log after character ``after``; returns its position."""

        def found() -> int | None:
            at = self.log().find(text, after)
            return at if at >= 0 else None

        return wait_for(f"{text!r} in district {self.code}'s log", found, timeout)

    # --- as its registrar ----------------------------------------------------------

    @property
    def rpc(self) -> registrar_pb2_grpc.RegistrarStub:
        if self._stub is None:
            self._channel = grpc.insecure_channel(f"unix:{self.config.registrar_socket}")
            self._stub = registrar_pb2_grpc.RegistrarStub(self._channel)
        return self._stub

    def call(self, method: str, request: Any) -> Any:
        return getattr(self.rpc, method)(request, timeout=RPC_TIMEOUT)

    def status(self, request_id: str) -> int:
        detail = self.call("GetRequest", registrar_pb2.RequestRef(request_id=request_id))
        return int(detail.summary.status)

    def wait_status(self, request_id: str, wanted: int, timeout: float = WAIT_TIMEOUT) -> None:
        seen: list[str] = []

        def reached() -> bool:
            try:
                status = self.status(request_id)
            except grpc.RpcError as exc:  # not there yet
                seen[:] = [exc.code().name]
                return False
            seen[:] = [Status.Name(status)]
            return status == wanted

        try:
            wait_for(f"request to be {Status.Name(wanted)} at {self.code}", reached, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc} (last: {seen}); log:\n{self.log_tail()}") from None

    # --- its database, read-only ---------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.config.database_url)
        return self._engine

    def rows(self, query: Any) -> list[Any]:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            return list(conn.execute(query).all())

    def scalar(self, query: Any) -> Any:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            return conn.execute(query).scalar()

    def record_rows(self, pid: str) -> dict[str, list[tuple[tuple[str, Any], ...]]]:
        """Every record row the district holds for ``pid``, per table, without PID/SQ/SRC."""
        out: dict[str, list[tuple[tuple[str, Any], ...]]] = {}
        for code in ALL_TABLES:
            table = RECORD_TABLES[code]
            out[code] = sorted(
                tuple(sorted((k, v) for k, v in row._mapping.items() if k not in BOOKKEEPING))
                for row in self.rows(select(table).where(table.c.PID == pid))
            )
        return out
