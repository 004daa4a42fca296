"""Regenerate the Python modules and .pyi stubs of protos/rt/v1/*.proto.

Run from anywhere (``make protos``). Proto paths mirror import paths: protoc
runs with ``-I .`` at the repository root, so ``protos/rt/v1/peer.proto`` becomes
``protos.rt.v1.peer_pb2`` and no import needs rewriting. ``--check`` regenerates
into a scratch folder and fails if the committed files differ (CI's drift test).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos" / "rt" / "v1"
GENERATED = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py", "*_pb2_grpc.pyi")


def generate(out: Path) -> None:
    """Write every generated file for protos/rt/v1 under ``out`` (a repo-like root)."""
    protos = sorted(str(p.relative_to(ROOT)) for p in PROTO_DIR.glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    bindir = Path(sys.executable).parent  # mypy-protobuf's plugins sit beside python
    args = [
        "protoc",
        "-I",
        str(ROOT),
        "-I",
        str(well_known),
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_files(root: Path) -> list[Path]:
    folder = root / "protos" / "rt" / "v1"
    return sorted(p for pattern in GENERATED for p in folder.glob(pattern))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated files drifted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        generate(out)
        fresh = {p.relative_to(out): p for p in generated_files(out)}
        committed = {p.relative_to(ROOT): p for p in generated_files(ROOT)}
        if args.check:
            drift = sorted(
                str(name)
                for name in fresh.keys() | committed.keys()
                if name not in fresh
                or name not in committed
                or not filecmp.cmp(fresh[name], committed[name], shallow=False)
            )
            if drift:
                print("generated code drifted from protos/: run 'make protos'", file=sys.stderr)
                for name in drift:
                    print(f"  {name}", file=sys.stderr)
                return 1
            return 0
        for path in committed.values():
            path.unlink()
        for name, path in fresh.items():
            shutil.copyfile(path, ROOT / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
