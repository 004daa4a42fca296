"""How ``rt`` reports a failure: one line for a person, or JSON for a script; never a traceback.

Every failure ends in ``report``: ``error: <message>`` on stderr, or with
``--json`` the object ``{"error": {"code": ..., "message": ...}}`` on stderr
(stdout stays empty), with the same exit code either way: ``EXIT_USAGE`` (2)
for a command line ``rt`` cannot take, ``EXIT_ERROR`` (1) for anything else.

The ``code`` is stable, for scripts to branch on:

- ``usage``: the command line is wrong (an unknown option, a bad value);
- ``config``: the district config is missing or unreadable;
- ``server_not_running``: nothing answers on the registrar socket;
- the district's refusals, by gRPC status code in lower case: ``not_found``,
  ``invalid_argument``, ``failed_precondition`` (not in this state),
  ``already_exists``, ``unavailable`` (try again later), ``resource_exhausted``,
  ``permission_denied``, ``aborted``, ``deadline_exceeded``;
- ``internal``: a bug (in ``rt`` or the server); ``RT_DEBUG=1`` lets ``rt``'s
  own traceback through.

``RtArgumentParser`` makes argparse raise ``UsageError`` instead of printing
and exiting, so that ``rt_client.cli.main`` reports it in the chosen format.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Final, NoReturn

from rich.console import Console
from rich.markup import escape

from rt_client.cli.session import EXIT_ERROR, EXIT_USAGE, CliError
from rt_client.errors import ConfigError, RecordsTransferError
from rt_client.status_codes import status_for

__all__ = [
    "INTERNAL",
    "RtArgumentParser",
    "UsageError",
    "check_text_arguments",
    "error_code",
    "report",
    "report_error",
    "report_usage",
    "unexpected",
]

INTERNAL: Final = "internal"


class UsageError(SystemExit):
    """A command line argparse cannot take. A ``SystemExit`` (code 2), as argparse's own."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.parser = parser
        self.message = message


class RtArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` (and, through ``add_subparsers``, its subcommands) that raises
    ``UsageError`` where argparse would print to stderr and exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def check_text_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Refuse an argument that is not text (bytes that are not UTF-8, as Python decodes them
    from the command line). Raises ``UsageError``."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape")[:40]
            raise UsageError(
                parser,
                f"the argument {shown!r} is not UTF-8 text; set the terminal's character "
                "encoding to UTF-8 (e.g. LANG=C.UTF-8) and type it again",
            ) from None


def error_code(exc: RecordsTransferError) -> str:
    """The stable ``code`` of an error (see the module's docstring)."""
    if isinstance(exc, CliError):
        return str(exc.code)
    if isinstance(exc, ConfigError):
        return "config"
    name: str = status_for(exc).name
    return name.lower()


def report(message: str, code: str, *, json_mode: bool, usage: str = "") -> None:
    """Print a failure on stderr: ``error: message`` (after ``usage``), or JSON with ``code``."""
    if json_mode:
        error = {"error": {"code": code, "message": message}}
        print(json.dumps(error, ensure_ascii=False), file=sys.stderr)
        return
    if usage:
        sys.stderr.write(usage)
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", highlight=False)


def report_usage(exc: UsageError, *, json_mode: bool) -> int:
    """Report a command line argparse refused, as argparse would (usage first). Returns 2."""
    if json_mode:
        report(exc.message, "usage", json_mode=True)
    else:
        report(
            f"{exc.parser.prog}: {exc.message}",
            "usage",
            json_mode=False,
            usage=exc.parser.format_usage(),
        )
    return EXIT_USAGE


def unexpected(exc: BaseException) -> str:
    """The message for an error ``rt`` did not expect (a bug)."""
    return (
        f"rt failed unexpectedly ({type(exc).__name__}); this is a bug: please report it "
        "with the command you ran (RT_DEBUG=1 shows the details)"
    )


def report_error(exc: RecordsTransferError, *, json_mode: bool) -> int:
    """Report one of the project's errors. Returns ``EXIT_USAGE`` for a ``usage`` error
    (a ``CliError`` about the command line), else ``EXIT_ERROR``."""
    code = error_code(exc)
    report(exc.diagnostics(), code, json_mode=json_mode)
    return EXIT_USAGE if code == "usage" else EXIT_ERROR
