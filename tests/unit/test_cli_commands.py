"""``rt``'s commands: the client library mounts the server's commands without importing it.

``rt serve`` and ``rt db`` live in ``rt_server.cli`` and reach ``rt`` through the
``rt.commands`` entry points of pyproject.toml (``rt_client.cli``).
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import rt_client.cli as rt_cli

REPO = Path(__file__).resolve().parents[2]


def _declared_commands() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    commands: dict[str, str] = project["entry-points"][rt_cli.COMMANDS_GROUP]
    return commands


def test_the_server_declares_serve_and_db() -> None:
    commands = _declared_commands()
    assert set(commands) == {
        *("serve", "db", "sis", "notices", "access-log", "purge"),  # the server's
        *("keys", "doctor"),  # the IT admin's
        *("console", "staff"),  # the console's: a Registrar client, like the CLI
    }
    for target in commands.values():
        module, _, name = target.partition(":")
        assert module in (
            *("rt_server.cli", "rt_server.keys_cli", "rt_server.doctor"),
            "rt_client.console.commands",
        )
        assert callable(getattr(importlib.import_module(module), name))


def test_importing_the_cli_imports_no_server() -> None:
    """The library's entry point alone pulls in neither rt_server nor registry."""
    code = (
        "import sys, rt_client.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rt_server', 'registry'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


class _EntryPoint:
    def __init__(self, name: str, target: str) -> None:
        self.name, self._target = name, target

    def load(self) -> object:
        module, _, attr = self._target.partition(":")
        return getattr(importlib.import_module(module), attr)


def test_installed_commands_are_mounted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With the entry points of pyproject.toml, ``rt db status`` reaches the server's command."""
    eps = [_EntryPoint(n, t) for n, t in _declared_commands().items()]
    monkeypatch.setattr(rt_cli, "entry_points", lambda group: eps if group == "rt.commands" else [])
    args = rt_cli.build_parser().parse_args(["db", "status", "--config", str(tmp_path / "x")])
    assert args.func.__module__ == "rt_server.cli"
    assert not getattr(args, "session", False)  # takes the arguments, not a registrar session
    args = rt_cli.build_parser().parse_args(["serve", "--config", "x.toml"])
    assert args.func.__name__ == "serve_command"
    # rt keys and rt doctor by their own entry points (serve's mounts them only until then).
    assert rt_cli.build_parser().parse_args(["doctor"]).func.__name__ == "doctor_command"
    assert rt_cli.build_parser().parse_args(["keys", "show"]).func.__name__ == "show_command"


def test_before_a_reinstall_serve_mounts_keys_and_doctor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry points installed before keys and doctor had their own: still there, once."""
    eps = [_EntryPoint(n, t) for n, t in _declared_commands().items() if n in ("serve", "db")]
    monkeypatch.setattr(rt_cli, "entry_points", lambda group: eps if group == "rt.commands" else [])
    assert rt_cli.build_parser().parse_args(["doctor"]).func.__name__ == "doctor_command"


def test_without_the_server_rt_still_serves_the_registrar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rt_cli, "entry_points", lambda group: [])
    parser = rt_cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["serve"])
    args = parser.parse_args(["show", "354b6766"])
    assert args.session and args.func.__name__ == "cmd_show"


def test_an_installed_command_missing_from_the_code_is_skipped_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stale install (a command the checkout no longer has) costs that command, not all of rt."""
    eps = [_EntryPoint(n, t) for n, t in _declared_commands().items()]
    eps.append(_EntryPoint("gone", "rt_server.cli:add_gone_command"))
    monkeypatch.setattr(rt_cli, "entry_points", lambda group: eps)
    args = rt_cli.build_parser().parse_args(["serve", "--config", "x.toml"])
    assert args.func.__name__ == "serve_command"
    assert "'gone' is not in this code; run `make install` again" in capsys.readouterr().err


def test_serve_needs_a_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RT_CONFIG", raising=False)
    eps = [_EntryPoint(n, t) for n, t in _declared_commands().items()]
    monkeypatch.setattr(rt_cli, "entry_points", lambda group: eps)
    assert rt_cli.main(["serve"]) == rt_cli.EXIT_ERROR
    assert "no district config" in capsys.readouterr().err


def test_a_command_is_a_namespace_function() -> None:
    """The contract of an ``rt.commands`` entry point: ``add(subparsers, common)``."""
    from rt_server.cli import add_serve_command

    parser = argparse.ArgumentParser()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config")
    add_serve_command(parser.add_subparsers(dest="command"), common)
    assert parser.parse_args(["serve", "--config", "c.toml"]).config == "c.toml"
