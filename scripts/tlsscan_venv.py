"""Create (or update) ``.venv-tlsscan``: sslyze, for the TLS scan in ``tests/security``.

sslyze pins ``cryptography<47`` and this project pins a newer one, so the two
cannot share ``.venv``. The scanner gets a virtualenv of its own, with the
packages of pyproject's ``tlsscan`` extra (pyproject stays the one place that
names dependencies); the tests run it as a subprocess (``python -m sslyze``).

Usage: ``python scripts/tlsscan_venv.py [VENV_DIR]`` (``make tlsscan`` does this).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirements() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    return list(project["optional-dependencies"]["tlsscan"])


def main(argv: list[str]) -> int:
    target = Path(argv[1]) if len(argv) > 1 else ROOT / ".venv-tlsscan"
    python = target / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(target)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirements(),
        ],
        check=True,
    )
    subprocess.run([str(python), "-m", "sslyze", "--help"], check=True, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
