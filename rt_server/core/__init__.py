"""The district server's pure core: record tables, validation, classification,
import, export, matching, the request state machine and the durable store.

Nothing here knows gRPC: functions take data and a SQLAlchemy engine or
connection, and return data (frozen dataclasses, row dicts, proto messages of
``protos.rt.v1``). The modules are the API; the most used names are re-exported.
"""

from rt_server.core._db import Bind
from rt_server.core.classify import Classified, RowClass, classify_rows
from rt_server.core.export import count_rows, iter_batches
from rt_server.core.importer import ImportResult, import_transfer
from rt_server.core.matching import Candidate, match_student
from rt_server.core.model import (
    DisclosureRecord,
    RequestRecord,
    StudentIdentity,
    StudentRecord,
    ThreadMessageRecord,
)
from rt_server.core.statuses import Action, Direction, Status, transition
from rt_server.core.tables import ALL_TABLES, TABLES, TableSpec, row_from_proto, row_to_proto
from rt_server.core.validate import MAX_ROWS_PER_BATCH, validate_batch, validate_row

__all__ = [
    "ALL_TABLES",
    "MAX_ROWS_PER_BATCH",
    "TABLES",
    "Action",
    "Bind",
    "Candidate",
    "Classified",
    "Direction",
    "DisclosureRecord",
    "ImportResult",
    "RequestRecord",
    "RowClass",
    "Status",
    "StudentIdentity",
    "StudentRecord",
    "TableSpec",
    "ThreadMessageRecord",
    "classify_rows",
    "count_rows",
    "import_transfer",
    "iter_batches",
    "match_student",
    "row_from_proto",
    "row_to_proto",
    "transition",
    "validate_batch",
    "validate_row",
]
