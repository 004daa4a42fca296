"""The web console of a district as a real ``rt console`` subprocess, its staff made with
``rt staff add``, and logging in with the current TOTP code.

``ConsoleProcess(district_config_path, root)``: ``add_staff`` runs ``rt staff
add --json`` and keeps the account's TOTP secret; ``code(username)`` is a
code for a time step that account has not used yet (RFC 6238 section 5.2:
each step once); ``start()`` serves the console on a free loopback port.

The ``rt console`` and ``rt staff`` commands are mounted through the
``rt.commands`` entry points of the installed package; where the installed
metadata predates them (a virtualenv installed before this branch), the
subprocess is given a dist-info naming them, so it runs the code under test.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

from rt_client.config import load_config
from rt_client.console import totp
from rt_client.console.staff import StaffStore, staff_db_path
from scripts.loopback import ServerProcess, free_port, spawn, wait_for
from tests.harness.processes import rt_command

PASSWORD = "a long test password"
_SHIM = """[rt.commands]
console = rt_client.console.commands:add_console_command
staff = rt_client.console.commands:add_staff_command
"""


def console_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if not any(e.name == "console" for e in entry_points(group="rt.commands")):
        shim = root / "entry-points-shim" / "rt_console_commands-0.dist-info"
        shim.mkdir(parents=True, exist_ok=True)
        (shim / "METADATA").write_text("Metadata-Version: 2.1\nName: rt-console-commands\n")
        (shim / "entry_points.txt").write_text(_SHIM)
        paths.insert(0, str(shim.parent))
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(Path(__file__).resolve().parents[2])])
    return env


class ConsoleProcess:
    def __init__(self, config_path: Path, root: Path) -> None:
        self.config_path = config_path
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.env = console_env(root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secrets: dict[str, str] = {}
        self._last_step: dict[str, int] = {}
        self.process: ServerProcess | None = None

    def rt(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*rt_command(), *args, "--config", str(self.config_path)],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )

    def add_staff(self, username: str, role: str, name: str, *, cli: bool = False) -> None:
        """An account, made by ``rt staff add`` (``cli``) or by the same store in this process
        (quicker: no interpreter to start)."""
        if not cli:
            store = StaffStore(staff_db_path(load_config(self.config_path).data_dir))
            self.secrets[username] = store.add(username, name, role, PASSWORD)
            return
        done = self.rt(
            "staff",
            "add",
            username,
            "--role",
            role,
            "--name",
            name,
            "--password-stdin",
            "--json",
            stdin=PASSWORD + "\n",
        )
        assert done.returncode == 0, done.stderr
        self.secrets[username] = json.loads(done.stdout)["totp_secret"]

    def code(self, username: str, consume: bool = True) -> str:
        """A valid code for a step this account has not used (now, or the next step);
        ``consume=False`` for an attempt that will fail (it uses up no step)."""
        secret = self.secrets[username]
        key = base64.b32decode(secret + "=" * (-len(secret) % 8))
        now = time.time()
        step = int(now // totp.STEP_SECONDS)
        if self._last_step.get(username, -1) >= step:
            step = self._last_step[username] + 1
            if step > int(now // totp.STEP_SECONDS) + 1:  # both used: wait for the next step
                time.sleep(totp.STEP_SECONDS - now % totp.STEP_SECONDS + 0.1)
        if consume:
            self._last_step[username] = step
        return totp.hotp(key, step)

    def start(self) -> ConsoleProcess:
        argv = [
            *rt_command(),
            "console",
            "--config",
            str(self.config_path),
            "--listen",
            f"127.0.0.1:{self.port}",
        ]
        self.process = spawn(
            f"console-{self.port}", argv, self.root / f"console-{self.port}.log", env=self.env
        )

        def up() -> bool:
            assert self.process is not None and self.process.alive(), self.process.tail()
            try:
                with urllib.request.urlopen(self.url + "/login", timeout=2) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        wait_for("the console to answer", up, timeout=30, interval=0.2)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
