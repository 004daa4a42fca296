"""Servers on loopback: free ports, bounded waits, health checks and server subprocesses.

The small part that the test harness (``tests/harness``), the benchmark
(``scripts/bench/cluster.py``) and the demo (``scripts/demo.py``) share. It lives
under ``scripts/`` rather than ``tests/`` because a script must not import the
test suite (nor pytest), while the tests already import ``scripts`` (the sample
data of ``scripts.samples``): one direction, tests -> scripts -> the packages.

Nothing here imports grpc at module level: ``scripts/demo.py`` must apply the
project's TLS cipher policy before grpc is first imported.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

WAIT_TIMEOUT = 60.0  # seconds, unless the caller says otherwise
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL


def free_port() -> int:
    """A port free right now on 127.0.0.1 (for configs that must name their port up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float = WAIT_TIMEOUT,
    *,
    interval: float = 0.05,
    error: Callable[[str], Exception] = AssertionError,
) -> T:
    """Poll ``probe`` until it returns something other than None or False; return that.

    Raises ``error`` (AssertionError unless the caller names its own) after
    ``timeout`` seconds; whatever ``probe`` raises goes straight through (a probe
    that sees its server die says so at once).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def health_ok(target: str, credentials: Any = None, server_name: str | None = None) -> bool:
    """A standard gRPC health check (overall status) against ``target``.

    ``target`` is ``unix:PATH`` (a district's registrar socket, no TLS) or
    ``host:port`` with ``credentials`` (and ``server_name``, the name the
    server's certificate must carry). False if it does not answer SERVING.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    if credentials is None:
        channel = grpc.insecure_channel(target)
    else:
        channel = grpc.secure_channel(target, credentials, options)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=1.0
        )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False
    finally:
        channel.close()


def tool_env() -> dict[str, str]:
    """The environment to run the project's commands in: this one, with this Python's
    ``bin`` directory first on PATH (``rt``, ``rt-registry``) and without the
    ``RT_CONFIG`` / ``RT_REGISTRY_HOME`` of the caller's shell (every command is
    given its ``--config`` or ``--home``)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for name in ("RT_CONFIG", "RT_REGISTRY_HOME"):
        env.pop(name, None)
    return env


def find_tool(name: str) -> str | None:
    """The project's command ``name``: beside this Python (its virtualenv), else on PATH."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    return shutil.which(name)


@dataclass
class ServerProcess:
    """A long-running server started in the background, its output in ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` of its log ("(no log)" if there is none)."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, as an init system stops it; SIGKILL if it is still running ``timeout`` later."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    append: bool = True,
    banner: str = "",
) -> ServerProcess:
    """Start ``argv`` in a session of its own (a Ctrl-C reaches only the caller, who stops it
    in order), stdin closed, stdout and stderr into ``log`` (after ``banner``, if any).

    Raises OSError if the program cannot be started.
    """
    with log.open("ab" if append else "wb") as out:
        if banner:
            out.write(banner.encode())
            out.flush()
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    return ServerProcess(name, popen, log)
