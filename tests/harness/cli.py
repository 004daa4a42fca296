"""The rt CLI run in this process against a district of the test world (rt_client.cli.main)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

import rt_client.cli as rt_cli
from tests.harness.world import Side


@dataclass
class Run:
    """What one ``rt`` command did: its exit code and what it printed."""

    code: int
    out: str
    err: str


Rt = Callable[..., Run]


def rt_runner(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Rt:
    """``rt(side, *args)``: run ``rt ARGS --config <side's config>``; no traceback may show."""
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
