"""``make demo`` end to end: ``scripts/demo.py`` as a subprocess, the real CLIs and servers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"


@pytest.mark.slow
@pytest.mark.subprocess
def test_demo_imports_every_row_exactly() -> None:
    bin_dir = Path(sys.executable).parent  # the venv's: rt and rt-registry live there
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    # TMPDIR stays as it is: pytest's tmp_path would make the registrar socket
    # paths (DATA_DIR/registrar.sock) longer than a Unix socket allows.
    env.pop("RT_CONFIG", None)
    env.pop("RT_REGISTRY_HOME", None)
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
    # The work directory is removed (no --keep).
    match = re.search(r"Records Transfer demo in (\S+)", result.stdout)
    assert match, result.stdout[:2000]
    assert not Path(match.group(1)).exists()
