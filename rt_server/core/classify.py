"""Classify incoming rows against the rows we hold: NEW, DUPLICATE or CONFLICT.

DESIGN.md section 6: rows are matched on their table's natural key, within one
student. A DUPLICATE has the same natural key and the same values in every data
column (everything but PID, SQ and SRC); a CONFLICT has the same natural key
and some different value; anything else is NEW. Values are compared exactly:
``""`` is not NULL, "Nuñez" is not "NUNEZ", and decimals compare by value
(2.5 == 2.50).

If several rows we hold share the key (an earlier accepted conflict adds one),
an identical one makes the row a DUPLICATE; otherwise the CONFLICT is reported
against the one that differs in the fewest columns (the lowest SQ on a tie).
Incoming rows are classified against what we hold only, not against each other.

Pure: the rows we hold come in as row dicts (``rt_server.store.held_rows``
reads them and calls ``classify_against``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rt_server.core.tables import TableRef, TableSpec, table_spec

__all__ = ["Classified", "RowClass", "classify_against"]


class RowClass(enum.StrEnum):
    """Review classes; the names are those of ``registrar_pb2.RowClass``."""

    NEW = "NEW"
    DUPLICATE = "DUPLICATE"
    CONFLICT = "CONFLICT"


@dataclass(frozen=True)
class Classified:
    """One incoming row and how it compares with what we hold."""

    table: str  # table code
    index: int  # position within its table in the transfer
    row_class: RowClass
    incoming: Mapping[str, Any]
    existing: Mapping[str, Any] | None  # DUPLICATE/CONFLICT: our row (with PID, SQ, SRC)
    differing_columns: tuple[str, ...]  # CONFLICT: data columns whose values differ


def _key(spec: TableSpec, row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row.get(c) for c in spec.natural_key)


def classify_against(
    table: TableRef | TableSpec,
    existing: Iterable[Mapping[str, Any]],
    incoming: Iterable[tuple[int, Mapping[str, Any]]],
) -> list[Classified]:
    """Classify ``(index, row)`` pairs against ``existing`` rows (the student's, of ``table``).

    ``existing`` should come in SQ order, so ties resolve to the lowest SQ.
    """
    spec = table_spec(table)
    by_key: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in existing:
        by_key.setdefault(_key(spec, row), []).append(row)

    data_columns = spec.data_columns
    results: list[Classified] = []
    for index, row in incoming:
        candidates = by_key.get(_key(spec, row))
        if not candidates:
            results.append(Classified(spec.code, index, RowClass.NEW, row, None, ()))
            continue
        best: tuple[Mapping[str, Any], tuple[str, ...]] | None = None
        for held in candidates:
            differing = tuple(c for c in data_columns if row.get(c) != held.get(c))
            if not differing:
                best = (held, ())
                break
            if best is None or len(differing) < len(best[1]):
                best = (held, differing)
        assert best is not None
        held, differing = best
        row_class = RowClass.CONFLICT if differing else RowClass.DUPLICATE
        results.append(Classified(spec.code, index, row_class, row, held, differing))
    return results
