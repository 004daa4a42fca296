"""``scripts/demo.py --console``: the demo's flow, then both consoles left running with a
printed login each; the login works as printed; Ctrl-C (SIGINT to the process group, as a
terminal sends it) stops every process and removes the work directory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from scripts.demo_steps.console import PASSWORD, READY
from scripts.loopback import tool_env

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            # the lines of the logins follow the marker
            seen.extend(proc.stdout.readline() for _ in range(7))
            return "".join(seen)
    raise AssertionError("".join(seen)[-4000:])


def _cookie(reply: httpx.Response) -> str:
    found = re.search(r"rt_console_session=[^;]+", reply.headers.get("set-cookie", ""))
    assert found, reply.headers
    return found.group(0)


@pytest.mark.slow
@pytest.mark.subprocess
def test_demo_console_serves_logins_until_ctrl_c() -> None:
    env = tool_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, str(DEMO), "--console", "--students", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job is
    )
    try:
        out = _read_until(proc, READY, timeout=150)
        work = re.search(r"Records Transfer demo in (\S+)", out)
        assert work, out[:2000]
        logins = re.findall(
            r"(http://127\.0\.0\.1:\d+)/\s+user (\w+) \((\w+)\)"
            r".*?-m rt_client\.console\.totp (\S+)",
            out,
            re.S,
        )
        assert [(u, r) for _, u, r, _ in logins] == [
            ("alice", "responder"),
            ("ben", "requester"),
        ], out[-3000:]
        for url, user, _, secret in logins:
            code = subprocess.run(
                [sys.executable, "-m", "rt_client.console.totp", secret],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout.strip()
            with httpx.Client(base_url=url, timeout=10) as client:
                form = client.get("/login")
                assert form.status_code == 200 and 'id="username"' in form.text
                csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
                assert csrf
                # The cookie is Secure: a browser sends it to a loopback console, httpx not.
                reply = client.post(
                    "/login",
                    data={"username": user, "password": PASSWORD, "code": code,
                          "csrf": csrf.group(1), "next": "/"},
                    headers={"cookie": _cookie(form)},
                )  # fmt: skip
                assert reply.status_code == 303 and reply.headers["location"] == "/", reply.text
                assert "Dashboard" in client.get("/", headers={"cookie": _cookie(reply)}).text
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest[-3000:]
        assert "every process stopped" in rest
        assert not Path(work.group(1)).exists()
        for url, *_ in logins:
            with pytest.raises(httpx.TransportError):
                httpx.get(url + "/login", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
