"""``make demo`` end to end: ``scripts/demo.py`` as a subprocess, the real CLIs and servers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.loopback import tool_env

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"


@pytest.mark.slow
@pytest.mark.subprocess
def test_demo_imports_every_row_exactly() -> None:
    env = tool_env()  # the venv's rt and rt-registry first on PATH; no RT_CONFIG/RT_REGISTRY_HOME
    # TMPDIR stays as it is: pytest's tmp_path would make the registrar socket
    # paths (DATA_DIR/registrar.sock) longer than a Unix socket allows.
    result = subprocess.run(
        [sys.executable, str(DEMO)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "DEMO OK: 300 of 300 rows in 8 tables imported exactly." in result.stdout, output[-6000:]
    assert "every process stopped" in result.stdout
    # It starts from an Aeries export loaded by rt sis load, and hands the import back.
    assert "$ rt sis load" in result.stdout
    assert "Wrote aeries-csv into handback/aeries-csv" in result.stdout
    assert "Wrote ed-fi-xml into handback/ed-fi-xml" in result.stdout
    assert "Ed-Fi 5.2 XML (each document valid against the XSDs)" in result.stdout
    # The work directory is removed (no --keep).
    match = re.search(r"Records Transfer demo in (\S+)", result.stdout)
    assert match, result.stdout[:2000]
    assert not Path(match.group(1)).exists()
