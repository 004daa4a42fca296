"""Record tables as the protocol names them: proto enum lists and row counts.

A request or decision lists its tables as ``common_pb2.TableCode`` values
(``table_enums``); a transfer announces how many rows of each it carries, kept
as the text ``"TST=120,HIS=64"`` (``format_counts`` / ``parse_counts``). Pure:
used by both sides of the flow and by the registrar service.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from protos.rt.v1 import common_pb2
from rt_server.core.tables import table_set, table_spec

__all__ = ["TableCounts", "format_counts", "parse_counts", "table_enums"]

TableCounts = dict[common_pb2.TableCode.ValueType, int]


def table_enums(
    tables: Sequence[common_pb2.TableCode.ValueType] | Sequence[str],
) -> list[common_pb2.TableCode.ValueType]:
    """Table codes as the proto enum, in table order; empty means all eight.

    Raises ``InvalidInput`` for an unknown table.
    """
    return [table_spec(code).enum for code in table_set(tables, empty_means_all=True)]


def format_counts(counts: Iterable[tuple[common_pb2.TableCode.ValueType, int]]) -> str:
    """``(table, rows)`` pairs, in the order given, as ``"TST=120,HIS=64"``.

    Raises ``ValueError`` for a table value the proto does not know.
    """
    return ",".join(f"{common_pb2.TableCode.Name(table)}={rows}" for table, rows in counts)


def parse_counts(text: str | None) -> TableCounts:
    """The counts of a ``"TST=120,HIS=64"`` text (empty or None: none).

    Raises ``ValueError`` for text that ``format_counts`` did not write.
    """
    out: TableCounts = {}
    for part in (text or "").split(","):
        if part:
            name, _, n = part.partition("=")
            out[common_pb2.TableCode.Value(name)] = int(n)
    return out
