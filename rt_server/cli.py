"""The district server's own ``rt`` commands: ``rt serve``, ``rt db``, ``rt sis load``;
``rt notices``, ``rt access-log`` and ``rt purge`` (from ``rt_server.cli_compliance``).

They run the server and its database, so they live with the server, not in
``rt_client`` (the library every party uses, which imports nothing of
``rt_server``). ``rt`` finds them through the ``rt.commands`` entry points in
pyproject.toml (``rt_client.cli``): each ``add_*_command`` mounts one
subcommand, whose ``func`` takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from rt_client.cli.session import EXIT_OK, CliError, district_config_path
from rt_client.config import load_config
from rt_server.cli_compliance import (
    add_access_log_command,
    add_notices_command,
    add_purge_command,
)

__all__ = [
    "add_access_log_command",
    "add_db_command",
    "add_notices_command",
    "add_purge_command",
    "add_serve_command",
    "add_sis_command",
    "db_command",
    "serve_command",
    "sis_command",
]


def add_serve_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Mount ``rt serve`` (``common``: the ``--config``/``--json``/``--as`` parent parser)."""
    sp = sub.add_parser(
        "serve", parents=[common], help="run this district's server (peer + registrar services)"
    )
    sp.add_argument(
        "--log-json",
        action="store_true",
        help='log one JSON object a line (as log_format = "json" in the config)',
    )
    sp.set_defaults(func=serve_command)
    _mount_uninstalled(sub, common)


def _mount_uninstalled(sub: Any, common: argparse.ArgumentParser) -> None:
    """``rt keys`` and ``rt doctor`` have entry points of their own (pyproject.toml);
    until the package is reinstalled (``pip install -e . --no-deps``) they ride on this
    one. (``rt`` mounts entry points by name, so theirs come before ``serve``.)"""
    mounted = getattr(sub, "choices", None) or {}
    if "keys" not in mounted:
        from rt_server.keys_cli import add_keys_command

        add_keys_command(sub, common)
    if "doctor" not in mounted:
        from rt_server.doctor import add_doctor_command

        add_doctor_command(sub, common)


def add_db_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Mount ``rt db upgrade`` and ``rt db status``."""
    db = sub.add_parser("db", help="the district database's schema (migrations)")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser(
        "upgrade",
        parents=[common],
        help="create the database, or migrate it to this version's schema (back it up first)",
        description=(
            "Migrate the district database named in the config to the newest schema revision, "
            "in one transaction. Run it once per upgrade, before starting the new version's "
            "servers; replicas refuse to start on a database that is not at their revision."
        ),
    ).set_defaults(func=db_command)
    db_sub.add_parser(
        "status", parents=[common], help="the database's schema revision, and the newest"
    ).set_defaults(func=db_command)


def serve_command(args: argparse.Namespace) -> int:
    """``rt serve``: run the district server until stopped. Raises ``CliError``, ``ConfigError``."""
    from rt_server.server import serve_forever

    serve_forever(load_config(district_config_path(args)), log_json=args.log_json)
    return EXIT_OK


def db_command(args: argparse.Namespace) -> int:
    """``rt db upgrade`` / ``rt db status``: the district database's schema revision.

    Raises ``CliError`` or ``ConfigError`` (no or bad config), ``SchemaVersionError``.
    """
    from rt_server.store import make_engine, migrations

    config = load_config(district_config_path(args))
    engine = make_engine(config.database_url)
    try:
        if args.db_command == "upgrade":
            from rt_server.flows.district import Limits
            from rt_server.store.spool import adopt_file_spool

            before, after = migrations.HISTORY.upgrade(engine)
            # Sealed transfers an older version spooled to files go into the database.
            adopted = adopt_file_spool(engine, config.data_dir / "spool", Limits().frame_bytes)
            result = {"from": before, "to": after, "changed": before != after, "spooled": adopted}
            text = (
                f"District database upgraded from {before or 'nothing'} to revision {after}."
                if before != after
                else f"District database already at the newest revision ({after})."
            )
            if adopted:
                text += f" {adopted} sealed transfer(s) moved from the spool folder into it."
        else:
            state = migrations.HISTORY.state(engine)
            result = {"current": state.current, "head": state.head, "at_head": state.at_head}
            if state.at_head:
                text = f"District database at the newest revision ({state.head})."
            elif not state.known:
                text = (
                    f"District database at revision {state.current}, newer than this version "
                    f"of rt knows ({state.head}): upgrade the software."
                )
            else:
                text = (
                    f"District database at revision {state.current or 'none'}; the newest is "
                    f"{state.head}: run 'rt db upgrade'."
                )
    finally:
        engine.dispose()
    if getattr(args, "json", False):
        print(json.dumps(result))
    else:
        Console().print(text, markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def add_sis_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Mount ``rt sis load FOLDER [--dry-run]`` and ``rt sis export``."""
    sis = sub.add_parser("sis", help="the district's student information system (SIS)")
    sis_sub = sis.add_subparsers(dest="sis_command", required=True, metavar="ACTION")
    load = sis_sub.add_parser(
        "load",
        parents=[common],
        help="load students and records from an Aeries table export (a folder of CSV files)",
        description=(
            "Load an Aeries table export into the district database, directly (not through "
            "the running server): STU.csv and any of TST, CST, CTS, HIS, ENR, IMM, LAC, PFT "
            ".csv, header row = Aeries column codes. Students are matched by ID, record rows "
            "by student and each table's key: loading the same export again changes nothing. "
            "One transaction: a file with any problem is refused whole, every problem named, "
            "and nothing is written."
        ),
    )
    load.add_argument("folder", help="the folder holding the export's CSV files")
    load.add_argument(
        "--dry-run",
        action="store_true",
        help="count the new, changed and unchanged rows of each table without writing",
    )
    load.set_defaults(func=sis_command)
    from rt_server.sis.cli_export import add_export_command

    add_export_command(sis_sub, common)


def sis_command(args: argparse.Namespace) -> int:
    """``rt sis load``: an Aeries export into the database. Raises ``CliError``,
    ``ConfigError``, ``ExportRefused`` (the problems; nothing written)."""
    from rt_server.sis.load import load_export
    from rt_server.store import make_engine, migrations

    config = load_config(district_config_path(args))
    engine = make_engine(config.database_url)
    progress = _Progress() if sys.stderr.isatty() and not getattr(args, "json", False) else None
    try:
        state = migrations.HISTORY.state(engine)
        if not state.at_head:
            raise CliError(
                "the district database is not at this version's schema: run 'rt db upgrade' first",
                "config",
            )
        report = load_export(
            engine,
            Path(args.folder),
            actor=getattr(args, "actor", None) or getpass.getuser(),
            dry_run=args.dry_run,
            progress=progress,
            schools=config.sis_schools,
        )
    finally:
        if progress is not None:
            progress.done()
        engine.dispose()
    if getattr(args, "json", False):
        print(json.dumps(report.as_json()))
        return EXIT_OK
    rate = report.rows / report.seconds if report.seconds else 0.0
    head = "Dry run: nothing written. " if report.dry_run else ""
    print(f"{head}{report.rows} rows read in {report.seconds:.1f} s ({rate:,.0f} rows/s).")
    verb = "would be" if report.dry_run else ""
    print(f"{'table':<6} {'new':>10} {'changed':>10} {'unchanged':>10}  {verb}".rstrip())
    for code, counts in report.tables.items():
        print(f"{code:<6} {counts.new:>10} {counts.changed:>10} {counts.unchanged:>10}")
    return EXIT_OK


class _Progress:
    """Rows read and rows/s on one stderr line, redrawn at most every half second."""

    def __init__(self) -> None:
        self._start = self._last = time.monotonic()
        self._shown = False

    def __call__(self, rows: int) -> None:
        now = time.monotonic()
        if now - self._last < 0.5:
            return
        self._last = now
        rate = rows / (now - self._start) if now > self._start else 0.0
        sys.stderr.write(f"\rloading: {rows:,} rows read ({rate:,.0f} rows/s)")
        sys.stderr.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
