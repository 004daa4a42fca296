"""The district database: schema (SQLAlchemy Core tables) and engine setup."""

from rt_server.db.schema import (
    METADATA,
    NOT_DURABLE,
    READ_ONLY,
    RECORD_TABLES,
    create_schema,
    make_engine,
)

__all__ = ["METADATA", "NOT_DURABLE", "READ_ONLY", "RECORD_TABLES", "create_schema", "make_engine"]
