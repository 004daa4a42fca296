"""The rt CLI run in this process against a district of the test world (rt_client.cli.main)."""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

import rt_client.cli as rt_cli
from tests.harness.world import Side

_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    """What one ``rt`` command did: its exit code and what it printed."""

    code: int
    out: str
    err: str


Rt = Callable[..., Run]


def rt_runner(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Rt:
    """``rt(side, *args)``: run ``rt ARGS --config <side's config>``; no traceback may show."""
    monkeypatch.setattr(rt_cli, "entry_points", declared_entry_points)
    monkeypatch.delenv("RT_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "200")

    def run(side: Side, *args: str) -> Run:
        capfd.readouterr()
        config = str(side.enrolled.config.data_dir / "district.toml")
        code = rt_cli.main([*args, "--config", config, "--as", "registrar"])
        out, err = capfd.readouterr()
        assert "Traceback" not in out + err
        return Run(code, out, err)

    return run


def declared_entry_points(*, group: str) -> list[EntryPoint]:
    """The installed ``group`` entry points, plus those this checkout's pyproject.toml declares.

    A checkout's new ``rt`` commands are found before it is installed again
    (the installed metadata lists the commands of the last install). Read once per
    run: the hostile-arguments test runs ``rt`` in this process some 1 500 times.
    """
    return list(_declared_entry_points(group))


@functools.cache
def _declared_entry_points(group: str) -> tuple[EntryPoint, ...]:
    found = {e.name: e for e in entry_points(group=group)}
    declared = tomllib.loads((_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for name, value in declared["project"]["entry-points"].get(group, {}).items():
        found[name] = EntryPoint(name, value, group)
    return tuple(found.values())
