"""How the demo runs the real tools: each command echoed and run in the work directory,
each server started in the background (its log in ``logs/``) and stopped at the end.

Nothing here imports grpc: ``scripts/demo.py`` applies the project's TLS cipher policy
before anything does.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console
from rich.markup import escape

from scripts import loopback
from scripts.loopback import ServerProcess

if TYPE_CHECKING:
    from scripts.demo_steps.world import DistrictRun

T = TypeVar("T")

CLI_TIMEOUT = 90.0  # seconds for any one CLI call
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL

# Piped (CI, tests) rich would assume 80 columns; the tools' tables want more.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


class DemoError(Exception):
    """A step failed; the message says which and why."""


@dataclass
class Demo:
    """Where everything lives, and what has been started (to stop it at the end)."""

    work: Path
    bin_dir: Path
    servers: list[ServerProcess] = field(default_factory=list)
    districts: list[DistrictRun] = field(default_factory=list)  # prior, new (for --console)
    env: dict[str, str] = field(default_factory=dict)
    _echoed: set[tuple[str, ...]] = field(default_factory=set)

    def tool(self, name: str) -> str:
        found = loopback.find_tool(name)
        if found is None:
            raise DemoError(f"cannot find the `{name}` command; run `make install` first")
        return found

    def rel(self, path: Path) -> str:
        """``path`` relative to the work directory, where every command runs."""
        return str(path.relative_to(self.work))

    def run(
        self,
        argv: Sequence[str],
        *,
        show: bool = True,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one command (in the work directory) to completion.

        The command is echoed the first time it runs (polls repeat silently),
        its output printed if ``show``.
        """
        shown = " ".join(_quote(a) for a in [Path(argv[0]).name, *argv[1:]])
        if tuple(argv) not in self._echoed:
            self._echoed.add(tuple(argv))
            console.print(f"[dim]$ {escape(shown)}[/dim]", soft_wrap=True)
        try:
            done = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                input=stdin,
                env={**self.env, **(env or {})},
                timeout=CLI_TIMEOUT,
                cwd=self.work,
            )
        except subprocess.TimeoutExpired as exc:
            raise DemoError(f"`{shown}` did not finish within {CLI_TIMEOUT:.0f} s") from exc
        if show and done.stdout:
            sys.stdout.write(done.stdout)
            sys.stdout.flush()
        if done.returncode != 0:
            raise DemoError(
                f"`{shown}` failed (exit {done.returncode}):\n"
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done

    def rt(self, district: DistrictRun, command: str, *args: str, show: bool = True) -> str:
        """``rt COMMAND --config ... --as ... ARGS`` as ``district``'s registrar.

        ``command`` is the command's words, e.g. ``"student add"``.
        """
        argv = [
            self.tool("rt"), *command.split(), "--config", self.rel(district.config),
            "--as", district.actor, *args,
        ]  # fmt: skip
        return self.run(argv, show=show).stdout

    def rt_json(self, district: DistrictRun, command: str, *args: str) -> Any:
        """``rt ... --json``, parsed."""
        out = self.rt(district, command, *args, "--json", show=False)
        try:
            return json.loads(out)
        except ValueError as exc:
            raise DemoError(f"`rt {command} --json` printed no JSON: {out[:200]!r}") from exc

    def start(self, name: str, argv: Sequence[str]) -> ServerProcess:
        """Start a long-running server in the background, its output in logs/NAME.log."""
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        log = logs / f"{name}.log"
        shown = " ".join(_quote(a) for a in [Path(argv[0]).name, *argv[1:]])
        console.print(
            f"[dim]$ {escape(shown)} &   # log: {log.relative_to(self.work)}[/dim]", soft_wrap=True
        )
        server = loopback.spawn(name, argv, log, env=self.env, cwd=self.work, append=False)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        """SIGTERM every server (newest first), then SIGKILL whatever is still running."""
        for server in reversed(self.servers):
            if server.alive():
                server.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for server in reversed(self.servers):
            try:
                server.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                console.print(f"[yellow]{server.name} ignored SIGTERM; killing it[/yellow]")
                server.popen.kill()
                server.popen.wait(5)
        self.servers.clear()


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./:=@" for c in arg) else json.dumps(arg)


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float, server: ServerProcess | None = None
) -> T:
    """Poll ``probe`` until it returns a value; DemoError on ``timeout`` or if ``server`` exits."""

    def probe_while_alive() -> T | None:
        result = probe()
        if result is None and server is not None and not server.alive():
            raise DemoError(
                f"{server.name} exited (status {server.popen.returncode}) while waiting for {what}"
            )
        return result

    return loopback.wait_for(what, probe_while_alive, timeout, interval=0.2, error=DemoError)


def heading(number: int, text: str) -> None:
    console.print()
    console.rule(f"[bold cyan]{number}. {text}[/bold cyan]", align="left")
