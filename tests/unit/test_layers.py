"""The district server's floors, checked at unit level: ``rt_server.core`` stays pure.

DESIGN.md section 9: rpc -> flows -> store -> core. The core is data in, data
out, so none of its modules may import SQLAlchemy (or another database
library), gRPC, or any floor above it (``rt_server.store``, ``flows``, ``rpc``,
the server). The import-linter contract of ``make lint`` says the same for the
whole import graph; this test reads each core file's syntax tree (every
``import``, at any depth, ``TYPE_CHECKING`` blocks included), which is fast,
needs no import and names the offending line.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import rt_server.core

CORE = "rt_server.core"
# Top-level packages the core must not use, and the one package whose
# modules it may use only inside itself.
FORBIDDEN_PACKAGES = ("sqlalchemy", "alembic", "psycopg", "grpc", "registry")
SERVER_PACKAGE = "rt_server"


def core_modules() -> list[str]:
    """Every module of ``rt_server.core``, the package itself included."""
    names = [CORE]
    for info in pkgutil.walk_packages(rt_server.core.__path__, prefix=CORE + "."):
        names.append(info.name)
    return sorted(names)


def imported_names(source: str, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted name) of everything ``source`` imports, relative imports resolved.

    ``from a import b`` yields both ``a`` and ``a.b`` (``b`` may be a module);
    ``importlib.import_module("x")`` and ``__import__("x")`` with a literal
    name count too.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
                found.append((node.lineno, str(first.value)))
    return found


def violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """The imports in ``source`` (of ``module``) that a core module may not make, one a line."""
    bad: dict[int, str] = {}
    for line, name in imported_names(source, module, is_package=is_package):
        top = name.split(".")[0]
        above = (
            top == SERVER_PACKAGE
            and name != SERVER_PACKAGE
            and not (name == CORE or name.startswith(CORE + "."))
        )
        if (top in FORBIDDEN_PACKAGES or above) and line not in bad:
            bad[line] = f"{module}:{line} imports {name}"
    return list(bad.values())


@pytest.mark.parametrize("module", core_modules())
def test_core_module_imports_nothing_impure(module: str) -> None:
    loaded = importlib.import_module(module)
    assert loaded.__file__ is not None
    path = Path(loaded.__file__)
    source = path.read_text(encoding="utf-8")
    assert violations(source, module, is_package=path.name == "__init__.py") == []


def test_the_core_modules_are_all_checked() -> None:
    assert set(core_modules()) >= {
        f"{CORE}.{name}"
        for name in ("classify", "matching", "model", "statuses", "tables", "validate")
    }


@pytest.mark.parametrize(
    "source",
    [
        "import sqlalchemy",
        "from sqlalchemy import select",
        "import grpc.aio",
        "from rt_server.store import schema",
        "from rt_server import store",
        "from rt_server.flows.district import District",
        "import rt_server.rpc.errors",
        "from .. import server",
        "from ..store._db import reading",
        "def f():\n    from sqlalchemy import select\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from grpc import Channel\n",
        "import importlib\nimportlib.import_module('sqlalchemy')",
    ],
)
def test_the_check_catches_an_impure_import(source: str) -> None:
    assert violations(source, f"{CORE}.example"), source


@pytest.mark.parametrize(
    "source",
    [
        "from rt_server.core.tables import TABLES",
        "from . import tables",
        "from .model import StudentRecord",
        "from rt_client.errors import InvalidInput",
        "from protos.rt.v1 import records_pb2",
        "import datetime as dt",
    ],
)
def test_the_check_allows_pure_imports(source: str) -> None:
    assert violations(source, f"{CORE}.example") == []
