"""``rt notices``, ``rt access-log``, ``rt purge``: the district's duties to families and auditors.

- ``rt notices``: parent notices of disclosure owed under 34 CFR 99.34(a)(1)
  (``annual_notice_covers_transfers = false``); ``rt notices letter ID --out
  FILE.pdf``; ``rt notices mark-mailed ID``; ``rt notices copy STUDENT REQUEST
  --out FILE.pdf|.csv``: the parent's copy of what was disclosed (99.34(a)(2)).
- ``rt access-log STUDENT``: who viewed, sent, received or imported the
  student's records, and when (EC 49064), from the audit trail.
- ``rt purge [--dry-run]``: delete received ciphertext ``received_retention_days``
  after its import; the record of disclosures (34 CFR 99.32(a)(2)) is kept.

Like ``rt sis load`` they run on the district's machine against the database
of ``district.toml`` directly (a server may be running). Files written hold
student data: created 0600, never overwriting one that exists.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from rt_client.cli.session import EXIT_OK, CliError, district_config_path
from rt_client.config import DistrictConfig, load_config

__all__ = ["add_access_log_command", "add_notices_command", "add_purge_command"]

_ACTIONS = {
    "student.view": "viewed (rt student show)",
    "records.review": "viewed (review of received records)",
    "disclosure.write": "sent (disclosed)",
    "request.send": "sent (delivered)",
    "request.receive": "requested by another district",
    "request.create": "requested from another district",
    "request.receive_data": "received",
    "request.import": "imported",
    "import.replace_row": "imported (replaced a row)",
    "records.purge": "received copy deleted (retention)",
    "parent_notice.mailed": "parent notice mailed",
}


def add_notices_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Mount ``rt notices`` (list, letter, mark-mailed, copy)."""
    p = sub.add_parser(
        "notices",
        parents=[common],
        help="parent notices of disclosure (34 CFR 99.34) and the parent's copy",
        description=(
            "Without an action: the parent notices owed and not yet mailed. A notice is owed "
            "for each disclosure to another school when annual_notice_covers_transfers = false."
        ),
    )
    p.add_argument("--all", action="store_true", help="also the notices already mailed")
    p.set_defaults(func=notices_command, notices_action="list")
    actions = p.add_subparsers(dest="notices_action", metavar="ACTION")
    letter = actions.add_parser("letter", parents=[common], help="write notice ID as a PDF")
    letter.add_argument("notice_id", type=int)
    letter.add_argument("--out", required=True, help="the PDF file to write (must not exist)")
    mailed = actions.add_parser("mark-mailed", parents=[common], help="notice ID was mailed")
    mailed.add_argument("notice_id", type=int)
    copy = actions.add_parser(
        "copy",
        parents=[common],
        help="the parent's copy of what a disclosure sent (34 CFR 99.34(a)(2))",
    )
    copy.add_argument("student", help="the student's local id")
    copy.add_argument("request", help="the request id (or its first 8 or more characters)")
    copy.add_argument("--out", required=True, help="FILE.pdf or FILE.csv (must not exist)")


def add_access_log_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Mount ``rt access-log STUDENT``."""
    p = sub.add_parser(
        "access-log",
        parents=[common],
        help="who viewed, sent or imported a student's records, and when (EC 49064)",
    )
    p.add_argument("student", help="the student's local id")
    p.set_defaults(func=access_log_command)


def add_purge_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Mount ``rt purge [--dry-run] [--days N]``."""
    p = sub.add_parser(
        "purge",
        parents=[common],
        help="delete received ciphertext imported more than received_retention_days ago",
        description=(
            "Deletes the encrypted copy of received transfers imported more than "
            "received_retention_days (district.toml) ago. The imported rows, the transfer's "
            "record, the audit trail and the record of disclosures are kept."
        ),
    )
    p.add_argument("--dry-run", action="store_true", help="list what would go; delete nothing")
    p.add_argument(
        "--days", type=int, help="imported more than this many days ago (default: the config's)"
    )
    p.set_defaults(func=purge_command)


@contextmanager
def _database(args: argparse.Namespace) -> Iterator[tuple[DistrictConfig, Engine]]:
    from rt_server.store import make_engine, migrations

    config = load_config(district_config_path(args))
    engine = make_engine(config.database_url)
    try:
        if not migrations.HISTORY.state(engine).at_head:
            raise CliError(
                "the district database is not at this version's schema: run 'rt db upgrade' first",
                "config",
            )
        yield config, engine
    finally:
        engine.dispose()


def _student(value: str) -> str:
    """A local student id as given. Raises ``InvalidInput`` (letters, digits, - and _, up to 16)."""
    from rt_server.core.inputs import parse_local_id

    local_id = parse_local_id(value, 16)
    if local_id is None:
        raise CliError("name the student by their local id (see 'rt student list')", "usage")
    return local_id


def _actor(args: argparse.Namespace) -> str:
    return getattr(args, "actor", None) or getpass.getuser()


def _print(text: str) -> None:
    Console().print(text, markup=False, highlight=False, soft_wrap=True)


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file, 0600. Raises ``CliError`` if it exists or cannot be written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"{path} exists; name a new file", "usage") from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}", "usage") from exc
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def notices_command(args: argparse.Namespace) -> int:
    """``rt notices``. Raises ``CliError``, ``ConfigError``, ``NotFound``, ``WrongStatus``."""
    from rt_server.flows import notices

    now = dt.datetime.now(dt.UTC)
    action = args.notices_action or "list"
    if not 0 < getattr(args, "notice_id", 1) < 2**62:
        raise CliError("a notice id is a positive number, as 'rt notices' lists them", "usage")
    with _database(args) as (config, engine):
        code = config.district_code
        if action == "letter":
            _write_new(Path(args.out), notices.letter(engine, code, args.notice_id, now.date()))
            _print(f"Parent notice {args.notice_id} written to {args.out}.")
            return EXIT_OK
        if action == "mark-mailed":
            notice = notices.mark_mailed(engine, args.notice_id, _actor(args), now)
            _print(f"Parent notice {notice.id} marked mailed by {notice.mailed_by}.")
            return EXIT_OK
        if action == "copy":
            out = Path(args.out)
            fmt = out.suffix.lower().lstrip(".")
            if fmt not in ("pdf", "csv"):
                raise CliError("--out must name a .pdf or a .csv file", "usage")
            data = notices.disclosed_copy(
                engine, code, _student(args.student), args.request, fmt, now.date()
            )
            _write_new(out, data)
            _print(f"The parent's copy of what was disclosed written to {out}.")
            return EXIT_OK
        owed = notices.owed_notices(engine, include_mailed=args.all)
    if getattr(args, "json", False):
        print(json.dumps([_notice_json(n) for n in owed]))
        return EXIT_OK
    if not owed:
        _print("No parent notice is waiting to be mailed.")
        return EXIT_OK
    table = Table("id", "student", "disclosed", "to", "request", "mailed")
    for n in owed:
        d = n.disclosure
        table.add_row(
            str(n.id),
            d.student_local_id,
            f"{d.disclosed_at:%Y-%m-%d}",
            f"{d.receiving_district} / {d.receiving_school}",
            d.request_id[:8],
            f"{n.mailed_at:%Y-%m-%d} {n.mailed_by}" if n.mailed_at else "-",
        )
    Console().print(table)
    return EXIT_OK


def _notice_json(n: Any) -> dict[str, Any]:
    d = n.disclosure
    return {
        "id": n.id,
        "student_local_id": d.student_local_id,
        "request_id": d.request_id,
        "receiving_district": d.receiving_district,
        "receiving_school": d.receiving_school,
        "disclosed_at": d.disclosed_at.isoformat(),
        "mailed_at": n.mailed_at.isoformat() if n.mailed_at else None,
        "mailed_by": n.mailed_by,
    }


def access_log_command(args: argparse.Namespace) -> int:
    """``rt access-log STUDENT``. Raises ``CliError``, ``ConfigError``, ``NotFound``."""
    from rt_server.store import access_log

    with _database(args) as (_, engine):
        events = access_log.access_events(engine, _student(args.student))
    if getattr(args, "json", False):
        print(
            json.dumps(
                [
                    {
                        "at": e.at.isoformat(),
                        "who": e.actor,
                        "action": e.action,
                        "what": _ACTIONS.get(e.action, e.action),
                        "request_id": e.request_id,
                        "detail": e.detail,
                    }
                    for e in events
                ]
            )
        )
        return EXIT_OK
    table = Table(
        "when (UTC)",
        "who",
        "what",
        "request",
        "detail",
        title=f"Access log of {args.student} (EC 49064)",
    )
    for e in events:
        table.add_row(
            f"{e.at:%Y-%m-%d %H:%M:%S}",
            e.actor,
            _ACTIONS.get(e.action, e.action),
            (e.request_id or "")[:8],
            e.detail,
        )
    Console(width=max(Console().width, 140)).print(table)
    return EXIT_OK


def purge_command(args: argparse.Namespace) -> int:
    """``rt purge``. Raises ``CliError``, ``ConfigError``."""
    from rt_server.store import access_log

    now = dt.datetime.now(dt.UTC)
    with _database(args) as (config, engine):
        days = config.received_retention_days if args.days is None else args.days
        if not 0 <= days <= 36500:
            raise CliError("--days must be a number of days from 0 to 36500", "usage")
        items = access_log.purgeable(engine, imported_before=now - dt.timedelta(days=days))
        done = 0 if args.dry_run else access_log.purge(engine, items, actor=_actor(args), now=now)
    if getattr(args, "json", False):
        print(
            json.dumps(
                {
                    "dry_run": bool(args.dry_run),
                    "purged": done,
                    "transfers": [
                        {
                            "transfer_id": i.transfer_id,
                            "request_id": i.request_id,
                            "imported_at": i.imported_at.isoformat(),
                            "bytes": i.ciphertext_bytes,
                        }
                        for i in items
                    ],
                }
            )
        )
        return EXIT_OK
    verb = "would be deleted" if args.dry_run else "deleted"
    for i in items:
        _print(
            f"{i.request_id[:8]}  transfer {i.transfer_id}  imported {i.imported_at:%Y-%m-%d}  "
            f"{i.ciphertext_bytes:,} bytes"
        )
    total = sum(i.ciphertext_bytes for i in items)
    head = "Dry run: nothing deleted. " if args.dry_run else ""
    _print(
        f"{head}{len(items)} received transfer(s) imported more than {days} day(s) ago: "
        f"{total:,} bytes of ciphertext {verb}. The record of disclosures is kept."
    )
    return EXIT_OK
