"""The district server's pure core: record tables, validation, classification,
matching and the request state machine.

Data in, data out: nothing here knows gRPC, SQL or the clock on the wall
(frozen dataclasses, row dicts, proto messages of ``protos.rt.v1``). The floor
above, ``rt_server.store``, keeps these values in the database. The modules are
the API; the most used names are re-exported.
"""

from rt_server.core.classify import Classified, RowClass, classify_against
from rt_server.core.matching import Candidate, rank_candidates
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
    "Candidate",
    "Classified",
    "Direction",
    "DisclosureRecord",
    "RequestRecord",
    "RowClass",
    "Status",
    "StudentIdentity",
    "StudentRecord",
    "TableSpec",
    "ThreadMessageRecord",
    "classify_against",
    "rank_candidates",
    "row_from_proto",
    "row_to_proto",
    "transition",
    "validate_batch",
    "validate_row",
]
