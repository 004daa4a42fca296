"""The district's database: every SQL statement of the district server lives in this floor.

``schema`` (SQLAlchemy Core tables), ``engine`` (opening the database, its
transaction settings), ``migrations`` (Alembic), and the durable operations by
aggregate: students, requests and decisions, transfers and their spool, the
outbox, audit, disclosures, thread messages, export of rows to send and import
of rows received. Each operation is one
transaction with its invariants (DESIGN.md section 6); values go in and come
out as ``rt_server.core`` types.
"""

from rt_server.store.engine import NOT_DURABLE, READ_ONLY, make_engine
from rt_server.store.schema import METADATA, RECORD_TABLES, create_schema

__all__ = ["METADATA", "NOT_DURABLE", "READ_ONLY", "RECORD_TABLES", "create_schema", "make_engine"]
