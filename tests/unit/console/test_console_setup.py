"""The console's defaults: no plain HTTP off loopback, idle sessions end, the role table."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rt_client.cli.session import CliError
from rt_client.console.app import permits
from rt_client.console.commands import console_command
from rt_client.console.web import WebSessions


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "10.1.2.3:80", "console.district.org:80"])
def test_plain_http_is_refused_off_loopback(listen: str, tmp_path: Path) -> None:
    args = argparse.Namespace(listen=listen, cert=None, key=None, config=str(tmp_path / "x.toml"))
    with pytest.raises(CliError, match="refusing plain HTTP"):
        console_command(args)


def test_cert_without_key_is_refused(tmp_path: Path) -> None:
    args = argparse.Namespace(listen="0.0.0.0:443", cert="web.pem", key=None, config="x.toml")
    with pytest.raises(CliError, match="both --cert and --key"):
        console_command(args)


def test_an_idle_session_ends() -> None:
    now = [1000.0]
    sessions = WebSessions(clock=lambda: now[0], idle=900)
    s = sessions.new()
    now[0] += 899
    assert sessions.get(s.sid) is s
    now[0] += 901
    assert sessions.get(s.sid) is None
    assert sessions.get(s.sid) is None  # gone, not revived


def test_roles() -> None:
    assert permits("requester", "import") and not permits("requester", "approve")
    assert permits("responder", "approve") and not permits("responder", "create")
    assert all(permits("admin", a) for a in ("create", "import", "approve", "reject"))
    assert not permits("nobody", "create")
