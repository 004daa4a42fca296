"""The web console of a district as a real ``rt console`` subprocess, its staff made with
``rt staff add``, and logging in with the current TOTP code.

``ConsoleProcess(district_config_path, root)``: ``add_staff`` runs ``rt staff
add --json`` and keeps the account's TOTP secret; ``code(username)`` is a
code for a time step that account has not used yet (RFC 6238 section 5.2:
each step once); ``start()`` serves the console on a free loopback port.

The ``rt console`` and ``rt staff`` commands are mounted through the
``rt.commands`` entry points; the subprocesses see this tree's (``console_env``),
whatever version of the tree the virtualenv was installed from.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from rt_client.config import load_config
from rt_client.console import totp
from rt_client.console.staff import StaffStore, staff_db_path
from scripts.loopback import ServerProcess, free_port, spawn, wait_for
from tests.harness.processes import rt_command

PASSWORD = "a long test password"
REPO = Path(__file__).resolve().parents[2]


def console_env(root: Path) -> dict[str, str]:
    """The environment of the ``rt`` subprocesses: this tree's code and this tree's
    ``rt.commands`` entry points (a dist-info written from pyproject.toml, first on the
    path, shadows the installed one, which may be of another version of the tree)."""
    env = dict(os.environ)
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    commands = project["project"]["entry-points"]["rt.commands"]
    shim = root / "entry-points" / "records_transfer-0.1.0.dist-info"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: records-transfer\nVersion: 0.1.0\n"
    )
    (shim / "entry_points.txt").write_text(
        "[rt.commands]\n" + "".join(f"{name} = {target}\n" for name, target in commands.items())
    )
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(shim.parent), str(REPO), *paths])
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

    def start(self, extra: Sequence[str] = (), verify: str | None = None) -> ConsoleProcess:
        """Serve it (``extra``: more ``rt console`` options; ``verify``: the certificate of an
        HTTPS console) and wait until its login page answers."""
        self.spawn(extra)
        return self.wait_up(verify)

    def spawn(self, extra: Sequence[str] = ()) -> ConsoleProcess:
        """Start ``rt console`` without waiting (``wait_up`` waits): consoles start together."""
        argv = [
            *rt_command(),
            "console",
            "--config",
            str(self.config_path),
            "--listen",
            f"127.0.0.1:{self.port}",
            *extra,
        ]
        self.process = spawn(
            f"console-{self.port}", argv, self.root / f"console-{self.port}.log", env=self.env
        )
        return self

    def wait_up(self, verify: str | None = None) -> ConsoleProcess:

        def up() -> bool:
            assert self.process is not None and self.process.alive(), self.process.tail()
            try:
                context = ssl.create_default_context(cafile=verify) if verify else None
                with urllib.request.urlopen(
                    self.url + "/login", timeout=2, context=context
                ) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        wait_for("the console to answer", up, timeout=30, interval=0.2)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
