"""Every ``rt`` command, with hostile arguments, against real running districts: never a traceback.

The test walks ``rt``'s own argparse parser (so a command added later is
covered without touching this file), including the commands other installed
packages mount (``rt serve``, ``rt db``). For every command it takes a
plausible command line (``_plausible``) and replaces one argument at a time
by a hostile value: negative and huge numbers, empty strings, 10 kB strings,
text that is not UTF-8 (what Python makes of such bytes in ``argv``),
unknown, short and malformed request ids, impossible dates, unknown table
codes, missing and unreadable files. Each run must end without a traceback
and without an unexpected error; input that is wrong for sure must end with
a non-zero exit and a message (and, with ``--json``, that message as JSON on
stderr, with the same exit code), and must change nothing in the district.

Most runs call ``rt_client.cli.main`` in this process (hundreds of them: a
subprocess each would take minutes); a few run the real ``rt`` script, where
Python itself would print a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

import rt_client.cli as rt_cli
from tests._databases import Databases
from tests.harness.cli import declared_entry_points
from tests.harness.flow import (
    add_student,
    approve,
    create_request,
    settle,
    small_records,
    snapshot,
)
from tests.harness.processes import rt_command
from tests.harness.world import NEW_SCHOOL, PRIOR_SCHOOL, Pair, Side, World

UNKNOWN_ID = "11111111-2222-3333-4444-555555555555"
NOT_UTF8 = "caf\udce9"  # b"caf\xe9" (Latin-1) as Python decodes it from argv
BIG = "9" * 11
LONG = "x" * 10_000
BAD_DATE = "2011-02-30"

# What must never reach a registrar.
FORBIDDEN = ("Traceback", "internal error", "failed unexpectedly")


@dataclass(frozen=True)
class Case:
    """One command line: ``argv`` (without ``--config``/``--as``), and whether it must fail."""

    command: str
    argv: tuple[str, ...]
    must_fail: bool
    what: str

    def __str__(self) -> str:
        return f"rt {self.command} [{self.what}]"


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[Any]:
    """(path, parser) of every command that runs something, walking the subparsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from leaves(child, (*path, name))
            return
    yield path, parser


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments of a command that take a value (not --help, not flags)."""
    return [
        a for a in parser._actions if a.nargs != 0 and not isinstance(a, argparse._SubParsersAction)
    ]


class Values:
    """Plausible values for each argument (by its ``dest``), for the districts of this test."""

    def __init__(self, tmp: Path, request_id: str, registry_ca: Path) -> None:
        records = tmp / "records.json"
        records.write_text('[{"table": "HIS", "his": [{"sq": 1, "yr": "2024-2025"}]}]')
        self.files = {
            "missing": str(tmp / "missing.json"),
            "not json": _write(tmp / "bad.json", "not json"),
            "a number": _write(tmp / "number.json", "5"),
            "a list of numbers": _write(tmp / "numbers.json", "[5]"),
            "an object": _write(tmp / "object.json", "{}"),
            "an unknown table": _write(tmp / "table.json", '[{"table": "NOPE"}]'),
            "Latin-1": _write_bytes(
                tmp / "latin1.json", b'[{"table": "HIS", "his": [{"co": "\xe9"}]}]'
            ),
            "a directory": str(tmp),
        }
        self.plain = {
            "request_id": request_id,
            "student": "B1",
            "local_id": "S77",
            "ssid": "1234567899",
            "first": "Ana",
            "middle": "Maria",
            "last": "Nunez",
            "birth_date": "2011-04-02",
            "gender": "F",
            "school": NEW_SCHOOL,
            "prior_school": PRIOR_SCHOOL,
            "prior_local_id": "A1",
            "tables": "HIS,ENR",
            "records": str(records),
            "from_csv": _write(tmp / "rush.csv", f"local_id,prior_school\nB1,{PRIOR_SCHOOL}\n"),
            "query": "Ana",
            "limit": "5",
            "status": "PENDING",
            "text": "hello",
            "accept_conflicts": "HIS:0",
            "actor": "registrar",
            # rt enroll: a registry nobody listens on, a data directory of this test.
            "code": "1234567",
            "auth_code": "x" * 64,
            "registry": "127.0.0.1:1",
            "registry_enroll": "127.0.0.1:1",
            "registry_ca": str(registry_ca),
            "registry_key": "00" * 32,
            "endpoint": "127.0.0.1:9",
            "data_dir": str(tmp / "enroll-dir"),
            "listen": "127.0.0.1:0",
            "database_url": f"sqlite:///{tmp / 'enroll.db'}",
        }

    def plausible(self, action: argparse.Action) -> str:
        if action.choices:
            return str(sorted(action.choices)[0])
        return self.plain.get(action.dest, "x")


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def _write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _hostile(action: argparse.Action, values: Values) -> list[tuple[str, str, bool]]:
    """(what, value, must fail) for one argument."""
    generic = [
        ("empty", "", action.dest == "request_id" or bool(action.choices)),
        ("10 kB", LONG, action.dest in ("request_id",) or bool(action.choices)),
        ("not UTF-8", NOT_UTF8, True),
        ("injection", "Robert'); DROP TABLE students;--", bool(action.choices)),
    ]
    dest = action.dest
    if action.type is int or dest == "limit":
        return generic + [
            ("negative", "-1", True),
            ("-5", "-5", True),
            ("huge", BIG, True),
            ("not a number", "ten", True),
        ]
    if dest == "request_id":
        return generic + [
            ("unknown id", UNKNOWN_ID, True),
            ("unknown prefix", "ffffffff", True),
            ("too short", "1234", True),
            ("not hex", "zzzzzzzz-zzzz", True),
        ]
    if "date" in dest:
        return generic + [("bad date", BAD_DATE, True), ("not a date", "yesterday", True)]
    if dest in ("tables", "accept_conflicts"):
        return generic + [
            ("bad table", "NOPE", True),
            ("bad index", "HIS:-1", True),
            ("huge index", f"HIS:{BIG}", True),
        ]
    if dest in ("records", "registry_ca", "from_csv"):
        return generic + [(f"file: {k}", v, True) for k, v in values.files.items()]
    if dest in ("student", "school", "prior_school", "ssid", "gender"):
        return generic + [("unknown", "ZZ999", True), ("negative", "-1", True)]
    if dest == "local_id":
        return generic + [("negative", "-1", True)]
    if dest == "config":
        return [
            ("empty", "", True),
            ("10 kB", LONG, True),
            ("not UTF-8", NOT_UTF8, True),
            ("missing", values.files["missing"], True),
            ("a directory", values.files["a directory"], True),
            ("not TOML", values.files["not json"], True),
        ]
    return generic


# Commands that serve until stopped (`rt console` would take port 8080 and stay).
SERVERS: Final = {("serve",), ("console",)}


def cases(parser: argparse.ArgumentParser, values: Values, real_config: str) -> list[Case]:
    out = []
    for path, leaf in leaves(parser):
        command = " ".join(path)
        args = arguments(leaf)
        for target in args:
            for what, value, must_fail in _hostile(target, values):
                argv: list[str] = list(path)
                for action in args:
                    if action.dest == "help":
                        continue
                    if action is target:
                        chosen = value
                    elif action.dest == "config":
                        # Never a real config for the servers: they would serve until killed.
                        chosen = values.files["missing"] if path in SERVERS else real_config
                    elif action.required or not action.option_strings:
                        chosen = values.plausible(action)
                    else:
                        continue
                    if action.option_strings:
                        argv += [action.option_strings[-1], chosen]
                    else:
                        argv.append(chosen)
                out.append(Case(command, tuple(argv), must_fail, f"{target.dest} {what}"))
    return out


@pytest.fixture
def world(districts: Pair) -> tuple[Pair, str]:
    """A and B running; B holds a received transfer (request id returned) and a pending one."""
    add_student(districts.a, "A1", small_records(1, 2))
    add_student(districts.b, "B1")
    request_id = create_request(districts)
    approve(districts, request_id, "A1")
    create_request(districts)
    return districts, request_id


def _run(capfd: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    try:
        code = rt_cli.main(argv)
    except SystemExit as exc:  # argparse's own exits (--help)
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # noqa: BLE001 - what the rt script would print as a traceback
        out, err = capfd.readouterr()
        return 1, out, f"{err}Traceback: {type(exc).__name__}: {exc}"
    out, err = capfd.readouterr()
    return code, out, err


# A thousand runs of argument handling, which no backend changes; the commands'
# PostgreSQL behaviour is tested where it differs. SQLite only: no PostgreSQL world is built.
@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
def test_every_command_with_hostile_arguments(
    databases: Databases,
    world: tuple[Pair, str],
    harness: World,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair, request_id = world
    # The commands this checkout declares, installed or not (tests.harness.cli).
    monkeypatch.setattr(rt_cli, "entry_points", declared_entry_points)
    monkeypatch.delenv("RT_CONFIG", raising=False)
    monkeypatch.delenv("RT_AUTH_CODE", raising=False)
    monkeypatch.setenv("COLUMNS", "120")
    parser = rt_cli.build_parser()
    # Every run parses with this one parser (rt builds the same one per run, ~1 500 runs):
    # argparse keeps no state between parses; each run's exit code and message are checked.
    monkeypatch.setattr(rt_cli, "build_parser", lambda: parser)
    commands = {" ".join(p) for p, _ in leaves(parser)}
    assert {"serve", "db status", "db upgrade", "enroll", "requests", "student list"} <= commands
    side: Side = pair.b
    config = str(side.enrolled.config.data_dir / "district.toml")
    all_cases = cases(parser, Values(tmp_path, request_id, harness.registry.ca_path), config)
    assert len(all_cases) > 100
    problems: list[str] = []
    for case in all_cases:
        if case.must_fail:
            settle(pair.a, pair.b)  # what an earlier run sent is delivered: nothing moves
        before = snapshot(side) if case.must_fail else None
        code, out, err = _run(capfd, [*case.argv, "--as", "registrar"])
        text = out + err
        if any(bad in text for bad in FORBIDDEN):
            problems.append(f"{case}: {text[-600:]}")
            continue
        if code != 0 and not err.strip():
            problems.append(f"{case}: exit {code} without a message")
        if case.must_fail:
            if code == 0:
                problems.append(f"{case}: accepted (exit 0): {out[-300:]}")
            elif before is not None and snapshot(side) != before:
                problems.append(f"{case}: refused but changed the district")
            if code != 0 and "--json" in _options(parser, case.command):
                jcode, jout, jerr = _run(capfd, [*case.argv, "--as", "registrar", "--json"])
                problems += _json_problems(case, code, jcode, jout, jerr)
    assert not problems, f"{len(problems)} of {len(all_cases)} runs:\n" + "\n".join(problems)


def _options(parser: argparse.ArgumentParser, command: str) -> set[str]:
    for path, leaf in leaves(parser):
        if " ".join(path) == command:
            return {o for a in leaf._actions for o in a.option_strings}
    return set()


def _json_problems(case: Case, code: int, jcode: int, out: str, err: str) -> list[str]:
    if any(bad in out + err for bad in FORBIDDEN):
        return [f"{case} --json: {(out + err)[-600:]}"]
    if jcode != code:
        return [f"{case} --json: exit {jcode}, without --json {code}"]
    try:
        error = json.loads(err)["error"]
    except (ValueError, KeyError, TypeError):
        return [f"{case} --json: stderr is not a JSON error: {err[-300:]!r}"]
    if not (isinstance(error.get("code"), str) and error.get("message")):
        return [f"{case} --json: no code or message: {error}"]
    if out.strip():
        return [f"{case} --json: an error printed to stdout: {out[-300:]!r}"]
    return []


def test_the_rt_script_prints_no_traceback(world: tuple[Pair, str], tmp_path: Path) -> None:
    """The real ``rt`` script, where an uncaught error would be Python's traceback."""
    pair, request_id = world
    config = str(pair.b.enrolled.config.data_dir / "district.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RT_")}
    runs: list[list[str | bytes]] = [
        ["requests", "--limit", "-1"],
        ["requests", "--limit", "99999999999"],
        ["student", "list", "--limit", "-5"],
        ["show", b"caf\xe9"],
        ["student", "list", b"\xff\xfe"],
        ["serve", "--config", str(tmp_path / "missing.toml")],
        ["db", "status", "--config", "x" * 5000],
    ]
    for argv in runs:
        tail: list[str | bytes] = [] if "--config" in argv else ["--config", config]
        done = subprocess.run(
            [*rt_command(), *argv, *tail],
            capture_output=True,
            timeout=60,
            env={**env, "COLUMNS": "120"},
        )
        text = (done.stdout + done.stderr).decode("utf-8", "replace")
        assert done.returncode != 0, (argv, text)
        assert not any(bad in text for bad in FORBIDDEN), (argv, text)
        assert "error" in text, (argv, text)
