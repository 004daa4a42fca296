"""The two sides of the SIS seam (DESIGN.md section 9): a record *source* and a record *sink*.

The flows read the rows of a student to send through ``District.source`` and
write the rows a registrar imports through ``District.sink``; they do not
know which adapter is behind either. ``seam_for`` picks them from the config:

- no ``sis_database_url``: our own record tables on both sides (filled by
  ``rt student add`` or ``rt sis load``);
- ``sis_database_url``: rows to send are read live from the SIS's tables
  (``rt_server.sis.live``);
- ``sis_write_back = true`` as well: an import goes into our tables (the
  ledger that makes it happen once, and what review compares with) *and*
  into the SIS's tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection

from protos.rt.v1 import records_pb2
from rt_client.config import DistrictConfig
from rt_server.core.tables import TableRef
from rt_server.core.validate import CheckedRows
from rt_server.store import export, importer
from rt_server.store._db import Bind

__all__ = ["OwnTables", "RecordSink", "RecordSource", "Seam", "seam_for"]


class RecordSource(Protocol):
    """Where the prior district's rows of a student come from."""

    def batches(self, pid: str, tables: Iterable[TableRef]) -> Iterator[records_pb2.RecordBatch]:
        """Student ``pid``'s rows of ``tables`` as record batches (transfer order, SQ order).

        Raises ``InvalidInput`` when a row cannot be sent as it stands.
        """
        ...


class RecordSink(Protocol):
    """Where the rows a registrar imports go (inside the import's transaction ``conn``)."""

    def import_batches(
        self,
        conn: Connection,
        transfer_id: str,
        pid: str,
        batches: Iterable[tuple[int, CheckedRows]],
        accept_conflicts: importer.AcceptConflicts,
        *,
        keep_both: importer.AcceptConflicts,
        actor: str,
        now: dt.datetime,
    ) -> importer.ImportResult:
        """Import a received transfer's checked batches; see ``importer.import_batches``."""
        ...


class OwnTables:
    """Our own record tables, as source and as sink."""

    def __init__(self, bind: Bind) -> None:
        self._bind = bind

    def batches(self, pid: str, tables: Iterable[TableRef]) -> Iterator[records_pb2.RecordBatch]:
        return export.iter_batches(self._bind, pid, tables)

    def import_batches(
        self,
        conn: Connection,
        transfer_id: str,
        pid: str,
        batches: Iterable[tuple[int, CheckedRows]],
        accept_conflicts: importer.AcceptConflicts,
        *,
        keep_both: importer.AcceptConflicts,
        actor: str,
        now: dt.datetime,
    ) -> importer.ImportResult:
        return importer.import_batches(
            conn,
            transfer_id,
            pid,
            batches,
            accept_conflicts,
            keep_both=keep_both,
            actor=actor,
            now=now,
        )


@dataclass
class Seam:
    source: RecordSource
    sink: RecordSink
    close: tuple[object, ...] = ()  # what holds connections (disposed when the server stops)

    def dispose(self) -> None:
        for thing in self.close:
            dispose = getattr(thing, "dispose", None)
            if dispose is not None:
                dispose()


def seam_for(config: DistrictConfig, bind: Bind) -> Seam:
    """The source and sink ``config`` asks for. Raises ``ConfigError`` (``SisLayoutError``)
    when the SIS database cannot be read or lacks tables or columns (each one named)."""
    own = OwnTables(bind)
    if not config.sis_database_url:
        return Seam(own, own)
    from rt_server.sis.live import LiveSource, WriteBack, open_sis

    sis = open_sis(config.sis_database_url, write=config.sis_write_back)
    sink: RecordSink = WriteBack(own, sis) if config.sis_write_back else own
    return Seam(LiveSource(sis), sink, (sis,))
