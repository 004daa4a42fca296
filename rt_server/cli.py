"""The district server's own ``rt`` commands: ``rt serve`` and ``rt db upgrade|status``.

They run the server and its database, so they live with the server, not in
``rt_client`` (the library every party uses, which imports nothing of
``rt_server``). ``rt`` finds them through the ``rt.commands`` entry points in
pyproject.toml (``rt_client.cli``): each ``add_*_command`` mounts one
subcommand, whose ``func`` takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console

from rt_client.cli.session import EXIT_OK, district_config_path
from rt_client.config import load_config

__all__ = ["add_db_command", "add_serve_command", "db_command", "serve_command"]


def add_serve_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Mount ``rt serve`` (``common``: the ``--config``/``--json``/``--as`` parent parser)."""
    sp = sub.add_parser(
        "serve", parents=[common], help="run this district's server (peer + registrar services)"
    )
    sp.set_defaults(func=serve_command)


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

    serve_forever(load_config(district_config_path(args)))
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
