"""``scripts/demo.py --console``: after the demo's flow, both districts' web consoles, with a
login each, left running for a person to click through until Ctrl-C.

At the prior district Alice is a *responder* (approve, reject); at the new district Ben is
a *requester* (ask, review, import). Each account is made by ``rt staff add``; the demo
prints its password, its TOTP secret (for an authenticator app) and a command that prints
the current code.
"""

from __future__ import annotations

import json
import os
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

from scripts.demo_steps.commands import Demo, DemoError, console, heading, wait_for
from scripts.demo_steps.world import DistrictRun
from scripts.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "demo password, not for production"
READY = "CONSOLES READY"
LOGINS = (("alice", "responder", "Alice Ortiz"), ("ben", "requester", "Ben Okafor"))


def entry_point_env(demo: Demo) -> dict[str, str]:
    """The checkout's ``rt.commands`` entry points first on the path: ``rt console`` and
    ``rt staff`` work even if the installed metadata is of an older tree."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    commands = project["project"]["entry-points"]["rt.commands"]
    shim = demo.work / "entry-points" / "records_transfer-0.1.0.dist-info"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: records-transfer\nVersion: 0.1.0\n"
    )
    (shim / "entry_points.txt").write_text(
        "[rt.commands]\n" + "".join(f"{name} = {target}\n" for name, target in commands.items())
    )
    paths = [p for p in demo.env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join([str(shim.parent), str(ROOT), *paths])}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/login", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def serve_consoles(demo: Demo, districts: tuple[DistrictRun, DistrictRun]) -> None:
    """Add a login per district, serve both consoles, print the logins, wait for Ctrl-C."""
    demo.env.update(entry_point_env(demo))
    heading(13, "Both consoles: a login each, for a person to click through")
    rows = []
    for district, (user, role, name) in zip(districts, LOGINS, strict=True):
        argv = [
            demo.tool("rt"), "staff", "add", user, "--role", role, "--name", name,
            "--password-stdin", "--json", "--config", demo.rel(district.config),
        ]  # fmt: skip
        done = demo.run(argv, show=False, stdin=PASSWORD + "\n")
        secret = json.loads(done.stdout)["totp_secret"]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = demo.start(
            f"console-{district.code}",
            [demo.tool("rt"), "console", "--config", demo.rel(district.config),
             "--listen", f"127.0.0.1:{port}"],
        )  # fmt: skip
        wait_for(f"the console of {district.code}", lambda u=url: _answers(u) or None, 30, server)
        rows.append((district.code, url, user, role, secret))
    if len(rows) != 2:
        raise DemoError("the consoles did not start")
    console.print(f"\n[bold]{READY}[/bold] (password for both: [bold]{PASSWORD}[/bold])")
    for code, url, user, role, secret in rows:
        console.print(
            f"  district {code}: {url}/  user [bold]{user}[/bold] ({role})\n"
            f"    TOTP secret {secret} (an authenticator app), or the current code:\n"
            f"    {sys.executable} -m rt_client.console.totp {secret}",
            soft_wrap=True,
            highlight=False,
        )
    console.print("Press Ctrl-C to stop everything.", highlight=False)
    sys.stdout.flush()
    while all(s.alive() for s in demo.servers):
        time.sleep(0.5)
    stopped = [s.name for s in demo.servers if not s.alive()]
    raise DemoError(f"{', '.join(stopped)} stopped by itself; see its log")
