"""The district database: every table as SQLAlchemy Core (``engine`` opens it).

One ``MetaData`` holds the eight Aeries record tables (DESIGN.md section 6), the
students, the request/transfer/outbox bookkeeping and the FERPA disclosure and
audit logs. Only portable column types are used, so the same schema runs on
SQLite (the embedded default) and PostgreSQL (psycopg 3).

Record tables keep Aeries' table and column codes, upper-case, exactly the proto
field names of ``records.proto`` upper-cased (``HisRow.cn`` <-> ``HIS.CN``). They
are built from the core's table specs (``rt_server.core.tables``), whose bounds
``rt_server.core.validate`` enforces on rows from a peer: the column types here
are those bounds, so what validates can be stored.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

from rt_client._migrations import named_metadata
from rt_server.core.matching import NAME_KEY_LEN
from rt_server.core.tables import TABLES, ColumnKind, ColumnSpec, TableSpec

__all__ = [
    "AUDIT_LOG",
    "CST",
    "CTS",
    "DISCLOSURES",
    "ENR",
    "HIS",
    "IMM",
    "IMPORT_LEDGER",
    "LAC",
    "METADATA",
    "OUTBOX",
    "PFT",
    "RECORD_TABLES",
    "REPLACED_ROWS",
    "REQUESTS",
    "SEEN_MESSAGES",
    "STUDENTS",
    "THREAD_MESSAGES",
    "TRANSFERS",
    "TRANSFER_CHUNKS",
    "TST",
    "UtcDateTime",
    "create_schema",
]

# Constraint names follow the convention of both databases (rt_client._migrations).
METADATA: Final = named_metadata()

# Shared widths. A local student id is ours (e.g. "S000123"); request, transfer
# and message ids are UUIDs chosen by whichever district created them.
LOCAL_ID_LEN: Final = 16
UUID_LEN: Final = 36
DISTRICT_LEN: Final = 7
SCHOOL_LEN: Final = 14
NAME_LEN: Final = 50
STAFF_LEN: Final = 100
TABLE_LIST_LEN: Final = 40  # "TST,CST,CTS,HIS,ENR,IMM,LAC,PFT" is 31

# Bigger-than-int identity columns: BIGINT on PostgreSQL, but SQLite only
# auto-increments an ``INTEGER PRIMARY KEY`` (the rowid alias).
_BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite has no timezone-aware type and SQLAlchemy would hand back naive
    datetimes there; PostgreSQL's ``timestamptz`` would interpret a naive value
    in the session's zone. Requiring aware values on the way in and returning
    UTC on the way out gives the same behaviour on both.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given where a timezone-aware one is required")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# --- the eight record tables (DESIGN.md section 6) -------------------------


_TYPE_OF_KIND: Final[dict[ColumnKind, TypeEngine[Any]]] = {
    ColumnKind.INT: Integer(),
    ColumnKind.BOOL: Boolean(),
    ColumnKind.DATE: Date(),
}


def _column_type(column: ColumnSpec) -> TypeEngine[Any]:
    """The database type of a record column: its kind and bounds, from the core's spec."""
    kind = column.kind
    if kind is ColumnKind.STRING:
        return String(column.max_length)
    if kind is ColumnKind.DECIMAL:
        return Numeric(column.precision, column.scale, asdecimal=True)
    return _TYPE_OF_KIND[kind]


def _record_table(spec: TableSpec) -> Table:
    """An Aeries record table: PID, then the columns of ``spec`` (SQ, the data, SRC).

    (PID, SQ) is the primary key, as in Aeries; its index also serves lookups
    by PID alone. A second index on (PID, natural key) serves duplicate
    detection, which always looks within one student.
    """
    return Table(
        spec.code,
        METADATA,
        Column(
            "PID",
            String(LOCAL_ID_LEN),
            ForeignKey("students.local_id", ondelete="RESTRICT"),
            nullable=False,
        ),
        # autoincrement=False: SQ is in the primary key, but the writer numbers it.
        *(
            Column(c.name, _column_type(c), nullable=not c.required, autoincrement=False)
            for c in spec.stored_columns
        ),
        PrimaryKeyConstraint("PID", "SQ"),
        Index(f"ix_{spec.code}_natural_key", "PID", *spec.natural_key),
    )


# Built from the core's table specs (``rt_server.core.tables``: the columns,
# their bounds, the natural keys), in the order a transfer carries them.
RECORD_TABLES: Final[dict[str, Table]] = {code: _record_table(s) for code, s in TABLES.items()}
TST: Final = RECORD_TABLES["TST"]
CST: Final = RECORD_TABLES["CST"]
CTS: Final = RECORD_TABLES["CTS"]
HIS: Final = RECORD_TABLES["HIS"]
ENR: Final = RECORD_TABLES["ENR"]
IMM: Final = RECORD_TABLES["IMM"]
LAC: Final = RECORD_TABLES["LAC"]
PFT: Final = RECORD_TABLES["PFT"]

# --- students ---------------------------------------------------------------

STUDENTS: Final = Table(
    "students",
    METADATA,
    Column("local_id", String(LOCAL_ID_LEN), primary_key=True),
    Column("ssid", String(10), unique=True),  # statewide student id; NULL if unknown
    Column("legal_first_name", String(NAME_LEN), nullable=False),
    Column("legal_middle_name", String(NAME_LEN)),
    Column("legal_last_name", String(NAME_LEN), nullable=False),
    Column("birth_date", Date, nullable=False),
    Column("gender", String(1)),
    Column("school", String(SCHOOL_LEN)),  # CDS code of the current school
    # Case- and accent-folded names ("Nuñez" -> "nunez"), kept so matching can
    # use an index on both databases instead of a per-dialect collation.
    Column("last_name_key", String(NAME_KEY_LEN), nullable=False, index=True),
    Column("first_name_key", String(NAME_KEY_LEN), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_students_birth_date", "birth_date"),
)

# --- requests, transfers, delivery ----------------------------------------

REQUESTS: Final = Table(
    "requests",
    METADATA,
    Column("request_id", String(UUID_LEN), primary_key=True),
    Column("direction", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_reason", String(500)),
    Column("other_district", String(DISTRICT_LEN), nullable=False),
    Column("requesting_district", String(DISTRICT_LEN), nullable=False),
    Column("requesting_school", String(SCHOOL_LEN), nullable=False),
    Column("prior_district", String(DISTRICT_LEN), nullable=False),
    Column("prior_school", String(SCHOOL_LEN), nullable=False),
    # The student as the request names them (for INBOUND: as received).
    Column("ssid", String(10)),
    Column("legal_first_name", String(NAME_LEN)),
    Column("legal_middle_name", String(NAME_LEN)),
    Column("legal_last_name", String(NAME_LEN)),
    Column("birth_date", Date),
    Column("gender", String(10)),
    Column("prior_local_id", String(LOCAL_ID_LEN)),
    # OUTBOUND: the student enrolled here; INBOUND: the confirmed local match.
    Column(
        "local_student_id",
        String(LOCAL_ID_LEN),
        ForeignKey("students.local_id", ondelete="RESTRICT"),
    ),
    Column("requested_by", String(STAFF_LEN)),
    Column("tables_requested", String(TABLE_LIST_LEN), nullable=False),
    # Decision: NULL approved = undecided.
    Column("approved", Boolean),
    Column("tables_approved", String(TABLE_LIST_LEN)),
    Column("reject_reason", String(32)),
    Column("reject_text", String(1000)),
    Column("decision_id", String(UUID_LEN)),
    Column("decided_by", String(STAFF_LEN)),
    Column("decided_at", UtcDateTime),
    Column("transfer_id", String(UUID_LEN)),
    Column("request_envelope", LargeBinary, nullable=False),  # the signed request
    Column("decision_envelope", LargeBinary),  # the signed decision
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime),
    # Delivery progress, for the registrar's view (the outbox drives the work).
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime),
    Column("delivery_bytes_total", BigInteger, nullable=False, default=0),
    Column("delivery_bytes_done", BigInteger, nullable=False, default=0),
    CheckConstraint("direction IN ('OUTBOUND', 'INBOUND')", name="direction"),
    Index("ix_requests_direction_status", "direction", "status"),
    Index("ix_requests_created_at", "created_at"),
    Index("ix_requests_transfer_id", "transfer_id"),
)

TRANSFERS: Final = Table(
    "transfers",
    METADATA,
    Column("transfer_id", String(UUID_LEN), primary_key=True),
    Column(
        "request_id",
        String(UUID_LEN),
        ForeignKey("requests.request_id", ondelete="RESTRICT"),
        nullable=False,
        index=True,
    ),
    Column("direction", String(8), nullable=False),
    Column("header", LargeBinary, nullable=False),  # serialized TransferHeader
    Column("header_signature", LargeBinary, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("ciphertext_bytes", BigInteger, nullable=False),  # as the header announces
    # Ciphertext bytes durably in ``transfer_chunks``: received so far (INBOUND),
    # or spooled so far by the sealing attempt (OUTBOUND).
    Column("received_offset", BigInteger, nullable=False, default=0),
    Column("trailer_signature", LargeBinary),
    Column("ciphertext_sha512", LargeBinary),
    # OUTBOUND (we send): SEALING while the ciphertext is written to the spool
    # (header, key and signatures still empty), SEALED once all of it is there
    # and never encrypted again; INBOUND (we receive): RECEIVING until the
    # trailer verifies, then RECEIVED.
    Column("state", String(16), nullable=False),
    # OUTBOUND while SEALING: the sealing attempt that owns the spool. A replica
    # that dies mid-seal leaves its attempt behind; the next one replaces it.
    Column("seal_attempt", String(UUID_LEN)),
    Column("table_counts", String(200)),  # "TST=120,HIS=64"
    Column("created_at", UtcDateTime, nullable=False),
    Column("completed_at", UtcDateTime),
    CheckConstraint("state IN ('SEALING', 'SEALED', 'RECEIVING', 'RECEIVED')", name="state"),
)

# Ciphertext in ~1 MiB pieces, in the database so that every replica can reach
# it: as received (INBOUND: one per DeliverRecords frame; a receive resumes at
# ``received_offset``, a review streams it back), or as sealed for sending
# (OUTBOUND: the spool, one piece per frame to send; any replica resumes a
# delivery from it, and it is deleted once the receiver's receipt verifies).
TRANSFER_CHUNKS: Final = Table(
    "transfer_chunks",
    METADATA,
    Column(
        "transfer_id",
        String(UUID_LEN),
        ForeignKey("transfers.transfer_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("seq", Integer, nullable=False, autoincrement=False),
    Column("offset", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("transfer_id", "seq"),
    UniqueConstraint("transfer_id", "offset"),
)

# The delivery worker's durable queue: whatever must reach the other district
# is written here in the same transaction as the state change that caused it.
OUTBOX: Final = Table(
    "outbox",
    METADATA,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("request_id", String(UUID_LEN), nullable=False, index=True),
    Column("to_district", String(DISTRICT_LEN), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("status", String(8), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("last_error", String(1000)),
    Column("claimed_by", String(100)),
    Column("claimed_until", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint(
        "kind IN ('request', 'decision', 'delivery', 'receipt', 'import_notice', 'message')",
        name="kind",
    ),
    CheckConstraint("status IN ('QUEUED', 'DONE', 'FAILED')", name="status"),
    Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
)

# --- import, thread, logs --------------------------------------------------

# Our record rows as they were before an import replaced them in place (an
# accepted CONFLICT, DESIGN.md section 4 step 6): the old values of the row
# ``table_code`` / (``student_local_id``, ``sq``), as the JSON of its proto row
# (records.proto, field names as there). Student data, kept beside the audit
# log (whose ``detail`` holds none) as long as the student's record; the audit
# row of the replacement points here by table and SQ.
REPLACED_ROWS: Final = Table(
    "replaced_rows",
    METADATA,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column(
        "student_local_id",
        String(LOCAL_ID_LEN),
        ForeignKey("students.local_id", ondelete="RESTRICT"),
        nullable=False,
    ),
    Column("table_code", String(3), nullable=False),
    Column("sq", Integer, nullable=False, autoincrement=False),
    Column("old_values", Text, nullable=False),
    Column("transfer_id", String(UUID_LEN), nullable=False),
    Column("row_index", Integer, nullable=False, autoincrement=False),  # in the transfer
    Column("replaced_at", UtcDateTime, nullable=False),
    Column("replaced_by", String(STAFF_LEN), nullable=False),
    Index("ix_replaced_rows_student", "student_local_id", "table_code", "sq"),
)

# The outcome of every incoming row of an imported transfer, so importing twice
# changes nothing. One row per run: the incoming rows row_index ..
# row_index + row_count - 1 of one table, consecutive, with one outcome; an
# IMPORTED run was written under SQ local_sq, local_sq + 1, ... (a transfer of
# rows we do not hold yet is one run per table, not one entry per row). Plus
# one marker row per transfer: table_code '*', row_index -1, row_count 0.
# Revision 0003 added row_count with DEFAULT 1: the rows before it are runs of
# one (the importer always gives it). A REPLACED run (an accepted conflict,
# revision 0004) updated our rows local_sq, local_sq + 1, ... in place.
IMPORT_LEDGER: Final = Table(
    "import_ledger",
    METADATA,
    Column("transfer_id", String(UUID_LEN), nullable=False),
    Column("table_code", String(3), nullable=False),
    Column("row_index", Integer, nullable=False, autoincrement=False),  # the run's first
    Column("row_count", Integer, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("local_sq", Integer),  # the SQ of the run's first row, if it was written
    Column("imported_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("transfer_id", "table_code", "row_index"),
)

THREAD_MESSAGES: Final = Table(
    "thread_messages",
    METADATA,
    # A local sequence, so messages with the same timestamp keep their order.
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("message_id", String(UUID_LEN), nullable=False, unique=True),
    Column(
        "request_id",
        String(UUID_LEN),
        ForeignKey("requests.request_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("from_district", String(DISTRICT_LEN)),  # NULL for local system messages
    Column("author", String(STAFF_LEN), nullable=False),
    Column("body", Text, nullable=False),
    Column("sent_at", UtcDateTime, nullable=False),
    Column("system", Boolean, nullable=False),
    Column("delivered", Boolean, nullable=False),
    Index("ix_thread_messages_request_id_sent_at", "request_id", "sent_at"),
)

# 34 CFR 99.32: a record of each disclosure, kept as long as the student's record.
DISCLOSURES: Final = Table(
    "disclosures",
    METADATA,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column(
        "student_local_id",
        String(LOCAL_ID_LEN),
        ForeignKey("students.local_id", ondelete="RESTRICT"),
        nullable=False,
        index=True,
    ),
    Column("receiving_district", String(DISTRICT_LEN), nullable=False),
    Column("receiving_school", String(SCHOOL_LEN), nullable=False),
    Column("tables", String(TABLE_LIST_LEN), nullable=False),
    # The rows sent of each table, "HIS=2,ENR=1" (revision 0004; NULL before it).
    Column("table_counts", String(200)),
    Column("disclosed_at", UtcDateTime, nullable=False),
    Column("request_id", String(UUID_LEN), nullable=False),
    Column("legal_basis", String(200), nullable=False),
    Column("acting_staff", String(STAFF_LEN), nullable=False),
)

# Who did what, when. ``detail`` never holds student data (names, SSIDs, birth
# dates, record values, free text a registrar typed); ``student_local_id`` is the
# only pointer to a student, for "who touched this student's record".
AUDIT_LOG: Final = Table(
    "audit_log",
    METADATA,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(STAFF_LEN), nullable=False),
    Column("action", String(40), nullable=False),
    Column("request_id", String(UUID_LEN), index=True),
    Column("student_local_id", String(LOCAL_ID_LEN)),
    Column("detail", String(500), nullable=False, default=""),
)

# Ids of decisions, notices, receipts and messages already processed: replays
# and re-sends are recognised and change nothing.
SEEN_MESSAGES: Final = Table(
    "seen_messages",
    METADATA,
    Column("message_id", String(UUID_LEN), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("at", UtcDateTime, nullable=False),
)


def create_schema(engine: Engine) -> None:
    """Bring the database to the newest schema revision, through the migrations.

    For the embedded database, the demo and tests; servers on an existing
    database use ``rt db upgrade`` (see ``rt_server.store.migrations``). Raises
    ``SchemaVersionError`` for a database newer than this code.
    """
    from rt_server.store import migrations  # the migration scripts import this module

    migrations.HISTORY.upgrade(engine)
