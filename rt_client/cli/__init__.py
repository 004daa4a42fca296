"""``rt``: the registrar's and IT admin's command line.

A thin shell over the district server's local ``Registrar`` service (a Unix
socket named in the district config): the registrar's commands are in
``rt_client.cli.registrar``, how answers are shown in ``rt_client.cli.render``.
Tables for humans by default, ``--json`` for scripts. Only this module turns
errors into exit codes.

The commands that run the district server itself (``rt serve``, ``rt db``) are
not part of this library, which never imports the server: the server package
mounts them through the ``rt.commands`` entry-point group (pyproject.toml),
found here with ``importlib.metadata``. An entry point names a function
``add(subparsers, common)`` that adds its subcommand, with ``common`` (the
``--config``, ``--json``, ``--as`` options) as a parent parser and a ``func``
taking the parsed arguments and returning the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any

# gRPC reads its TLS cipher list once, when it is first imported: restrict it
# (DESIGN.md section 3) before anything imports grpc. This module is an entry point.
from rt_client.tls import configure_grpc_tls

configure_grpc_tls()

from rt_client.cli.compliance import add_compliance_commands
from rt_client.cli.errors import (
    INTERNAL,
    RtArgumentParser,
    UsageError,
    check_text_arguments,
    report,
    report_error,
    report_usage,
    unexpected,
)
from rt_client.cli.registrar import add_registrar_commands
from rt_client.cli.session import EXIT_ERROR, EXIT_OK, EXIT_USAGE, CliError, Session
from rt_client.errors import RecordsTransferError

__all__ = [
    "COMMANDS_GROUP",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "build_parser",
    "main",
]

# The entry-point group through which other installed packages add commands to ``rt``.
COMMANDS_GROUP = "rt.commands"


def build_parser() -> argparse.ArgumentParser:
    common = RtArgumentParser(add_help=False)
    common.add_argument("--config", help="district config file (default: $RT_CONFIG)")
    common.add_argument(
        "--json", action="store_true", help="print JSON for scripts instead of tables"
    )
    common.add_argument(
        "--as", dest="actor", help="staff member recorded in the audit trail (default: your login)"
    )

    p = RtArgumentParser(
        prog="rt",
        description=(
            "Records Transfer: request, approve, review and import student records "
            "between districts."
        ),
    )
    p.add_argument("--version", action="version", version=f"rt {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from rt_client.enroll import add_enroll_parser

    add_enroll_parser(sub)
    _add_installed_commands(sub, common)
    add_registrar_commands(sub, common)
    add_compliance_commands(sub, common)
    return p


def _add_installed_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Mount the commands other installed packages offer (``rt serve``, ``rt db``), by name."""
    for entry_point in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            add_command = entry_point.load()
        except (ImportError, AttributeError):
            # An install older or newer than the code (a checkout moved since
            # `make install`): the other commands still work, and this says how to fix it.
            print(
                f"rt: the installed command {entry_point.name!r} is not in this code;"
                " run `make install` again",
                file=sys.stderr,
            )
            continue
        add_command(sub, common)


def _version() -> str:
    try:
        return version("records-transfer")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``rt`` command; returns the exit code. Reports every failure itself
    (``rt_client.cli.errors``): no traceback reaches the user unless ``RT_DEBUG`` is set."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in args_list
    try:
        parser = build_parser()
        check_text_arguments(parser, args_list)
        args = parser.parse_args(args_list)
        if not hasattr(args, "config"):
            args.config = None
        if not hasattr(args, "actor"):
            args.actor = None
        if getattr(args, "func", None) is None:
            parser.print_help()
            return EXIT_USAGE
        session = Session(args)
        # The registrar's commands take the session; enroll and installed commands, the arguments.
        return int(args.func(session) if getattr(args, "session", False) else args.func(args))
    except UsageError as exc:
        return report_usage(exc, json_mode=json_mode)
    except RecordsTransferError as exc:
        return report_error(exc, json_mode=json_mode)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("RT_DEBUG"):
            raise
        report(unexpected(exc), INTERNAL, json_mode=json_mode)
        return EXIT_ERROR
