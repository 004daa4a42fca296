"""``rt review --rows``: the received rows as one table per table code, conflicts side by side.

Each row is a line: where it is in the transfer (``HIS:0``, the reference
``rt import --accept-conflicts`` takes), its class, and its columns by their
Aeries names. A CONFLICT row shows, in each column that differs, our value
and the received one as ``ours | received``; the other columns are the same
in both. Columns empty in every row listed are left out.

By default (``--rows``) the DUPLICATE and CONFLICT rows are listed, since NEW
ones are imported without a choice; when every row is NEW there is nothing
else to show, so the NEW rows are listed instead. ``--rows all`` lists every row.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table
from rich.text import Text

from protos.rt.v1 import common_pb2, records_pb2, registrar_pb2

__all__ = ["render_rows", "rows_to_show"]

_CLASS = {
    registrar_pb2.NEW: "NEW",
    registrar_pb2.DUPLICATE: "DUPLICATE",
    registrar_pb2.CONFLICT: "CONFLICT",
}


def rows_to_show(
    reply: registrar_pb2.TransferReview, which: str
) -> dict[common_pb2.TableCode.ValueType, list[registrar_pb2.ReviewedRow]]:
    """The rows ``--rows which`` lists, by table code: "all", or "changed" (every row when
    all are NEW)."""
    everything = which == "all" or all(
        row.row_class == registrar_pb2.NEW for tr in reply.tables for row in tr.rows
    )
    return {
        tr.table: [r for r in tr.rows if everything or r.row_class != registrar_pb2.NEW]
        for tr in reply.tables
    }


def _values(batch: records_pb2.RecordBatch, field: str) -> dict[str, Any]:
    rows = getattr(batch, field, None)
    if not rows:
        return {}
    row: Message = rows[0]
    return json_format.MessageToDict(row, preserving_proto_field_name=True)


def _fields(field: str) -> list[str]:
    """The proto fields of a table's row (``field``: the table's field of ``RecordBatch``)."""
    row = records_pb2.RecordBatch.DESCRIPTOR.fields_by_name[field].message_type
    return [f.name for f in row.fields] if row is not None else []


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def render_rows(console: Console, reply: registrar_pb2.TransferReview, which: str) -> None:
    """Print the rows ``--rows which`` lists (see the module's docstring)."""
    shown = rows_to_show(reply, which)
    all_new = which != "all" and all(
        row.row_class == registrar_pb2.NEW for tr in reply.tables for row in tr.rows
    )
    if all_new and any(shown.values()):
        console.print("Every received row is NEW (none is like a row we hold):")
    any_conflict = False
    for code, rows in shown.items():
        if rows:
            any_conflict |= _render_table(console, common_pb2.TableCode.Name(code), rows)
    if any_conflict:
        console.print(
            "A CONFLICT row is like one of ours (same key) with other values: '*' marks them, "
            "and the table under it shows ours | received."
        )
    if not any(shown.values()):
        console.print("No DUPLICATE or CONFLICT rows; 'rt review REQUEST_ID --rows all' lists all.")


def _render_table(console: Console, name: str, rows: list[registrar_pb2.ReviewedRow]) -> bool:
    """One table code's rows, then its conflicts side by side. Returns whether it had any."""
    field = name.lower()
    listed = [(r, _values(r.incoming, field), _values(r.existing, field)) for r in rows]
    used = [f for f in _fields(field) if any(f in inc or f in ours for _, inc, ours in listed)]
    table = Table(title=f"{name}: {len(rows)} row(s)", title_justify="left")
    table.add_column("row", no_wrap=True)
    table.add_column("class", no_wrap=True)
    for f in used:
        table.add_column(f.upper(), overflow="fold")  # folded, never cut: every value shows
    side_by_side = Table(title=f"{name} conflicts", title_justify="left")
    for heading in ("row", "column", "ours", "received"):
        side_by_side.add_column(heading, overflow="fold")
    for row, incoming, ours in listed:
        conflict = row.row_class == registrar_pb2.CONFLICT
        differing = {c.lower() for c in row.differing_columns} if conflict else set()
        where = f"{name}:{row.index}"
        cells: list[Text | str] = [where, _CLASS.get(row.row_class, "?")]
        for f in used:
            value = _text(incoming.get(f))
            if f in differing:
                cells.append(Text(f"{value}*", style="bold yellow"))
                side_by_side.add_row(
                    where,
                    f.upper(),
                    Text(_text(ours.get(f)), style="red"),
                    Text(value, style="green"),
                )
            else:
                cells.append(value)
        table.add_row(*cells)
    console.print(table)
    if side_by_side.row_count:
        console.print(side_by_side)
    for row, _, _ in listed:
        if row.row_class == registrar_pb2.CONFLICT and row.replaces_sq:
            console.print(
                f"{name}:{row.index} CONFLICT: accepting it replaces our row SQ {row.replaces_sq}",
                markup=False,
            )
    return side_by_side.row_count > 0
