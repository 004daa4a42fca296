"""``rt sis export``: hand the rows we imported back to the SIS (Aeries CSV or Ed-Fi XML).

``add_export_command(sis_subparsers, common)`` mounts ``export`` under the
``rt sis`` group; ``export_command`` runs it and returns the exit code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from rt_client.cli.session import EXIT_OK, CliError, district_config_path
from rt_client.config import load_config
from rt_client.errors import InvalidInput

__all__ = ["FORMATS", "add_export_command", "export_command", "run_export"]

FORMATS = ("aeries-csv", "ed-fi-xml")


def add_export_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Mount ``export`` on ``sub`` (the ``rt sis`` group's subparsers)."""
    sp = sub.add_parser(
        "export",
        parents=[common],
        help="write the rows we imported as Aeries CSV files or Ed-Fi 5.2 XML, for the SIS",
        description=(
            "Write the rows an import added to our tables (for one request, or every import "
            "since a date) into FOLDER: one Aeries-layout CSV file a table (STU.csv and the "
            "record tables) for Aeries' Import Data utility, or Ed-Fi 5.2 interchanges, each "
            "validated against the Ed-Fi XSDs. Existing files are never overwritten."
        ),
    )
    which = sp.add_mutually_exclusive_group(required=True)
    which.add_argument("--request", metavar="ID", help="the request (id or unique prefix)")
    which.add_argument(
        "--imported-since", metavar="DATE", help="every import on or after DATE (YYYY-MM-DD, UTC)"
    )
    sp.add_argument("--format", required=True, choices=FORMATS)
    sp.add_argument("--out", required=True, metavar="FOLDER", type=Path)
    sp.add_argument(
        "--namespace",
        metavar="URI",
        help="ed-fi-xml: the district's descriptor namespace (default uri://<district>.rt)",
    )
    sp.set_defaults(func=export_command)


def _since(text: str) -> dt.datetime:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise CliError(f'--imported-since "{text}" is not a date: use YYYY-MM-DD') from None
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def run_export(
    bind: Any,
    *,
    fmt: str,
    out: Path,
    request: str | None = None,
    since: dt.datetime | None = None,
    namespace: str = "uri://district.rt",
) -> Mapping[str, int]:
    """Export and return the counts a file.

    Raises ``CliError``, ``InvalidInput`` or ``NotFound``.
    """
    from rt_server.store import sis_export

    if request is not None:
        ids = sis_export.request_ids_with_prefix(bind, request.strip().lower())
        if not ids:
            raise CliError(f'no request "{request}": see rt requests', code="not_found")
        if len(ids) > 1:
            raise CliError(f'"{request}" starts more than one request id: give more of it')
        request = ids[0]
    students = sis_export.imported_students(bind, request_id=request, since=since)
    first = next(students, None)
    if first is None:
        raise CliError(
            "nothing to export: no rows were imported "
            + ("for that request (import it first: rt import)" if request else "since that date"),
            code="not_found",
        )
    everyone = itertools.chain([first], students)
    if fmt == "aeries-csv":
        from rt_server.sis.export_aeries import export_aeries_csv

        return export_aeries_csv(everyone, out)
    from rt_server.sis.export_edfi import export_edfi_xml

    return export_edfi_xml(everyone, out, namespace)


def export_command(args: argparse.Namespace) -> int:
    """``rt sis export``. Raises ``CliError``, ``ConfigError``, ``InvalidInput``."""
    from rt_server.store import make_engine

    since = _since(args.imported_since) if args.imported_since is not None else None
    config = load_config(district_config_path(args))
    namespace = args.namespace or f"uri://{config.district_code.lower()}.rt"
    if not namespace.startswith("uri://") or "#" in namespace:
        raise InvalidInput("--namespace must look like uri://district.example.org")
    engine = make_engine(config.database_url)
    try:
        counts = run_export(
            engine, fmt=args.format, out=args.out, request=args.request, since=since,
            namespace=namespace.rstrip("/"),
        )  # fmt: skip
    finally:
        engine.dispose()
    if getattr(args, "json", False):
        print(json.dumps({"format": args.format, "folder": str(args.out), "files": counts}))
    else:
        listing = ", ".join(f"{name}: {n}" for name, n in counts.items())
        Console().print(
            f"Wrote {args.format} into {args.out} ({listing}).",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    return EXIT_OK
