"""The summer rush, in batches: ``rt request create --from-csv``, ``rt approve --all-exact``,
``rt import --all-new``.

Each is one call to the district (``CreateRequests``, ``ApproveExactMatches``,
``ImportAllNew``), which does every item in a transaction of its own. The
answer is shown one line per item (``--json``: a list of items), then a
count; the exit code is 1 if any item failed (an item left for a person is not
a failure).

The CSV file of ``--from-csv`` (UTF-8, a header row, comma-separated):

    local_id,prior_school,prior_local_id,tables
    B1001,19647331932334,,
    B1002,19647331932334,A-77,"HIS,ENR"

``local_id`` (the student, enrolled here) and ``prior_school`` (the prior
school's CDS code) are needed; ``prior_local_id`` and ``tables`` (default:
all eight) may be left out or empty. With the columns ``ssid``, ``first``,
``middle``, ``last``, ``birth_date``, ``gender`` and ``school`` filled, a
student not enrolled yet is enrolled under ``local_id`` in the same
transaction as the request (the README has the details). A file that is not such a CSV (not
UTF-8, an unknown or missing column, a line with too many fields, an empty
required value, an unknown table code) is refused whole, every problem named
by its line, and nothing is sent. What only the district can judge (a student
not enrolled, a school not registered) fails that line alone.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Final

from google.protobuf.message import Message
from rich.markup import escape

from protos.rt.v1 import common_pb2, registrar_pb2
from rt_client.cli import arguments
from rt_client.cli.errors import report
from rt_client.cli.session import (
    EXIT_ERROR,
    EXIT_OK,
    STUDENT_FIELDS,
    TABLE_NAMES,
    CliError,
    Session,
)

__all__ = [
    "CSV_COLUMNS",
    "MAX_CSV_BYTES",
    "MAX_CSV_ROWS",
    "cmd_approve_all_exact",
    "cmd_import_all_new",
    "cmd_request_create_csv",
    "parse_request_csv",
    "read_request_csv",
]

_REQUEST_COLUMNS: Final = ("local_id", "prior_school", "prior_local_id", "tables")
# The student's demographics (optional): to enroll a student not enrolled yet.
# Columns are named as `rt student edit`'s options.
_STUDENT_COLUMNS: Final = STUDENT_FIELDS
CSV_COLUMNS: Final = (*_REQUEST_COLUMNS, *_STUDENT_COLUMNS)
_REQUIRED: Final = ("local_id", "prior_school")
_ENROLL_NEEDS: Final = ("first", "last", "birth_date", "school")
MAX_CSV_ROWS: Final = 10_000  # one call: beyond this, split the file
_MAX_FIELD: Final = 100  # characters in one value (ids and codes are far shorter)
MAX_CSV_BYTES: Final = 4 * 1024 * 1024
_MAX_BYTES: Final = MAX_CSV_BYTES
_SHOWN_PROBLEMS: Final = 20
_SHOWN: Final = 200  # of a path in a message
# A batch does many items in one call: longer than one item's timeout.
BATCH_TIMEOUT: Final = 1800.0

_OUTCOME_WORDS: Final = {
    registrar_pb2.ITEM_DONE: "done",
    registrar_pb2.ITEM_LEFT: "left",
    registrar_pb2.ITEM_FAILED: "FAILED",
}


def _table_codes(text: str) -> list[common_pb2.TableCode.ValueType] | None:
    """Table codes separated by commas, semicolons or spaces; None if one is unknown."""
    names = [n for n in text.replace(";", ",").replace(" ", ",").upper().split(",") if n]
    if any(n not in TABLE_NAMES for n in names):
        return None
    return [common_pb2.TableCode.Value(n) for n in names]


def read_request_csv(path: Path) -> list[registrar_pb2.CreateRequestsItem]:
    """The requests of a ``--from-csv`` file, each labelled by its line ("line 4").

    Raises ``CliError`` naming every problem (the first 20, and the count).
    """
    where = str(path)[:_SHOWN]
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise CliError(too_large(where))
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the CSV file {where}: {exc.strerror}") from None
    return parse_request_csv(data, where)


def too_large(where: str) -> str:
    return (
        f"the CSV file {where} is larger than 4 MB; split it into files of at most "
        f"{MAX_CSV_ROWS} students"
    )


def parse_request_csv(data: bytes, where: str) -> list[registrar_pb2.CreateRequestsItem]:
    """``read_request_csv`` of a file's bytes (an upload); ``where`` names it in messages."""
    if len(data) > _MAX_BYTES:
        raise CliError(too_large(where))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CliError(
            f"the CSV file {where} is not UTF-8 text; save it as 'CSV UTF-8' and try again"
        ) from None
    if "\x00" in text:
        raise CliError(f"the CSV file {where} is not a text file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader, [])]
    except csv.Error as exc:
        raise CliError(f"the CSV file {where}, line 1: {exc}") from None
    missing = [c for c in _REQUIRED if c not in header]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        raise CliError(
            f"the CSV file {where} needs a header row naming its columns, from "
            f"{', '.join(CSV_COLUMNS)} (local_id and prior_school needed), e.g. "
            "'local_id,prior_school'"
            + (f"; {unknown[0][:30]!r} is not one" if unknown else "")
            + (f"; {missing[0]} is missing" if missing and not unknown else "")
        )
    items: list[registrar_pb2.CreateRequestsItem] = []
    problems: list[str] = []
    try:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue  # a blank line
            if len(items) + len(problems) >= MAX_CSV_ROWS:
                raise CliError(
                    f"the CSV file {where} has more than {MAX_CSV_ROWS} students; split it"
                )
            problem, item = _item_of(header, fields)
            if problem:
                problems.append(f"line {line}: {problem}")
            elif item is not None:
                item.label = f"line {line}"
                items.append(item)
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: {exc}")
    if problems:
        shown = "; ".join(problems[:_SHOWN_PROBLEMS])
        more = f" (and {len(problems) - _SHOWN_PROBLEMS} more)" if len(problems) > 20 else ""
        raise CliError(
            f"the CSV file {where} has {len(problems)} problem(s), nothing was sent: {shown}{more}"
        )
    if not items:
        raise CliError(f"the CSV file {where} lists no students (a header row, then a line each)")
    return items


def _item_of(
    header: list[str], fields: list[str]
) -> tuple[str, registrar_pb2.CreateRequestsItem | None]:
    """(problem, None) or ("", the item) for one line of the CSV file."""
    if len(fields) > len(header):
        return f"{len(fields)} values, but the header names {len(header)} columns", None
    row = {name: value.strip() for name, value in zip(header, fields, strict=False)}
    for name in _REQUIRED:
        if not row.get(name):
            return f"{name} is empty", None
    for name, value in row.items():
        if len(value) > _MAX_FIELD:
            return f"{name} is longer than {_MAX_FIELD} characters", None
    tables = _table_codes(row.get("tables", ""))
    if tables is None:
        return f'tables takes codes from {", ".join(TABLE_NAMES)}, e.g. "HIS,ENR"', None
    item = registrar_pb2.CreateRequestsItem(
        request=registrar_pb2.CreateRequestRequest(
            student_local_id=row["local_id"],
            prior_school=row["prior_school"],
            prior_local_id=row.get("prior_local_id", ""),
            tables=tables,
        )
    )
    if any(row.get(name) for name in _STUDENT_COLUMNS):
        missing = [name for name in _ENROLL_NEEDS if not row.get(name)]
        if missing:
            return (
                f"to enroll the student, {', '.join(missing)} cannot be empty "
                "(or leave every demographic column empty for a student enrolled already)"
            ), None
        try:
            arguments.date(row["birth_date"])
        except argparse.ArgumentTypeError as exc:
            return f"birth_date {exc}", None
        item.enroll.CopyFrom(
            registrar_pb2.Student(
                **{field: row.get(name, "") for name, field in _STUDENT_COLUMNS.items()}
            )
        )
    return "", item


def _show(s: Session, reply: registrar_pb2.BatchResult, done_word: str) -> int:
    """One line per item (or the JSON list), then the counts; 1 if any item failed."""
    items = list(reply.items)

    def human() -> None:
        width = max((len(i.label) for i in items), default=0)
        for i in items:
            who = f"student {i.student_local_id}: " if i.student_local_id else ""
            ref = f"request {i.short_id}: " if i.short_id and i.short_id != i.label else ""
            s.console.print(
                f"{escape(i.label.ljust(width))}  {_OUTCOME_WORDS.get(i.outcome, '?'):6}  "
                f"{escape(ref + who + i.message)}",
                highlight=False,
                soft_wrap=True,
            )
        if not items:
            s.console.print("Nothing to do.")
            return
        s.console.print(
            f"{reply.done} {done_word}, {reply.left} left for a person, {reply.failed} failed.",
            highlight=False,
        )

    s.emit(list[Message](items), human)
    if reply.failed:
        report(
            f"{reply.failed} of {len(items)} item(s) failed (see each one's message); "
            "the others are done or left as shown",
            "batch_items_failed",
            json_mode=s.json,
        )
        return EXIT_ERROR
    return EXIT_OK


def _refuse_with(s: Session, batch_option: str, *options: str) -> None:
    """A batch option given with an option of the single command: a usage error."""
    for option in options:
        if getattr(s.args, option.lstrip("-").replace("-", "_"), None):
            shown = "request id" if option == "request_id" else option
            raise CliError(f"{batch_option} takes no {shown}: it works through every item itself")


def cmd_request_create_csv(s: Session) -> int:
    _refuse_with(s, "--from-csv", "--student", "--prior-school", "--prior-local-id", "--tables")
    items = read_request_csv(Path(s.args.from_csv))
    reply = s.call(
        "CreateRequests",
        registrar_pb2.CreateRequestsRequest(items=items, actor=s.actor),
        timeout=BATCH_TIMEOUT,
    )
    return _show(s, reply, "requested")


def cmd_approve_all_exact(s: Session) -> int:
    _refuse_with(s, "--all-exact", "request_id", "--student", "--tables", "--wait")
    reply = s.call(
        "ApproveExactMatches", registrar_pb2.BatchRef(actor=s.actor), timeout=BATCH_TIMEOUT
    )
    return _show(s, reply, "approved")


def cmd_import_all_new(s: Session) -> int:
    _refuse_with(s, "--all-new", "request_id", "--accept-conflicts", "--keep-both")
    reply = s.call("ImportAllNew", registrar_pb2.BatchRef(actor=s.actor), timeout=BATCH_TIMEOUT)
    return _show(s, reply, "imported")
