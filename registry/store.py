"""The registry's database: districts, schools, authorization-code hashes, signed entries.

SQLAlchemy 2 Core on any database URL (SQLite by default, PostgreSQL in
production). Entries are append-only: every change of a district's signed
entry is a new row with a higher version, so the history of what the registry
vouched for is kept. Authorization codes are stored only as scrypt hashes
(``registry.authcode``); a consumed or revoked code is NULL. Failed
enrollments are counted per district for the operator; the lockout they lead
to is on their source, in the serving process (``registry._limiter``).

All access goes through ``RegistryStore.transaction()``: one transaction per
operation, so a failed operation changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine

from rt_client._migrations import named_metadata
from rt_client._sqlite_files import restrict_sqlite_files
from rt_client.errors import ConfigError, InvalidInput, NotFound
from rt_client.ids import DistrictCode, SchoolCode

# The database could not complete a transaction (busy, full, unreachable): it
# rolled back, and may succeed if tried again. The servicers answer UNAVAILABLE.
DatabaseFailure = sa.exc.OperationalError

__all__ = [
    "DatabaseFailure",
    "STATUS_ACTIVE",
    "STATUS_PENDING",
    "STATUS_REVOKED",
    "DistrictRow",
    "EntryRow",
    "RegistryStore",
    "SchoolRow",
    "StoreTransaction",
]

STATUS_PENDING: Final = "pending"  # added by the operator, not enrolled yet
STATUS_ACTIVE: Final = "active"
STATUS_REVOKED: Final = "revoked"


class _UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Constraint names follow the convention of both databases (rt_client._migrations).
metadata = named_metadata()

districts = sa.Table(
    "districts",
    metadata,
    sa.Column("code", sa.String(7), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("endpoints", sa.Text, nullable=False),  # JSON list of host:port
    sa.Column("auth_code_hash", sa.String(200), nullable=True),
    # Failed enrollments since the code was issued, and when a source was last
    # locked out because of them (the lock itself is on the source: registry._limiter).
    sa.Column("failed_attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_lockout_at", _UtcDateTime, nullable=True),
    sa.Column("created_at", _UtcDateTime, nullable=False),
)

schools = sa.Table(
    "schools",
    metadata,
    sa.Column("cds_code", sa.String(14), primary_key=True),
    sa.Column("district_code", sa.String(7), sa.ForeignKey("districts.code"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
)

entries = sa.Table(
    "entries",
    metadata,
    sa.Column("district_code", sa.String(7), sa.ForeignKey("districts.code"), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # serialized rt.v1.DirectoryEntry
    sa.Column("signature", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("tls_spki_sha256", sa.LargeBinary, nullable=False),
    sa.Column("issued_at", _UtcDateTime, nullable=False),
    sa.Column("expires_at", _UtcDateTime, nullable=False),
)

# The reads on every call's path (a caller's check, a lookup), built once: building
# and coercing a statement per call cost more than running it.
_DISTRICT = sa.select(districts).where(districts.c.code == sa.bindparam("code"))
_CURRENT_ENTRY = (
    sa.select(entries)
    .where(entries.c.district_code == sa.bindparam("code"))
    .order_by(entries.c.version.desc())
    .limit(1)
)


# The directory log (registry.tlog): leaf i is the i-th entry version signed,
# its hash RFC 9162's leaf hash of the entry's signed body. Append-only.
log_leaves = sa.Table(
    "log_leaves",
    metadata,
    sa.Column("leaf_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("district_code", sa.String(7), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("leaf_hash", sa.LargeBinary, nullable=False),
    sa.UniqueConstraint("district_code", "version"),
)

# Hashes of the log's complete subtrees above the leaves (rt_client.merkle.Node):
# level >= 1, the leaves [node_index << level, (node_index + 1) << level).
# Written once, when the subtree's last leaf is appended; proofs read O(log n) of them.
log_nodes = sa.Table(
    "log_nodes",
    metadata,
    sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("node_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("node_hash", sa.LargeBinary, nullable=False),
)

# The log's head: one row (id 1) holding the tree size. An append updates it
# first, so concurrent appends queue on its row lock (PostgreSQL) or on the
# write lock (SQLite) and each takes the next leaf index.
log_head = sa.Table(
    "log_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("tree_size", sa.BigInteger, nullable=False),
)

# Signed checkpoints, one per tree size published; ``note`` grows as witnesses cosign.
log_checkpoints = sa.Table(
    "log_checkpoints",
    metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root_hash", sa.LargeBinary, nullable=False),
    sa.Column("note", sa.LargeBinary, nullable=False),
)


@dataclass(frozen=True)
class DistrictRow:
    code: DistrictCode
    name: str
    status: str
    endpoints: tuple[str, ...]
    auth_code_hash: str | None
    failed_attempts: int
    last_lockout_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class SchoolRow:
    cds_code: SchoolCode
    district_code: DistrictCode
    name: str
    district_name: str


@dataclass(frozen=True)
class EntryRow:
    district_code: DistrictCode
    version: int
    body: bytes
    signature: bytes
    status: str
    tls_spki_sha256: bytes
    issued_at: datetime
    expires_at: datetime


class RegistryStore:
    """The registry database behind a URL. Build one per process; it is thread-safe."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def open(cls, url: str, *, check_schema: bool = True) -> RegistryStore:
        """Connect to ``url``; with ``check_schema``, refuse a database not at the newest revision.

        A brand-new, empty SQLite file is created at the newest revision instead
        (the embedded default, as for a district); PostgreSQL is never migrated
        implicitly. Raises ``ConfigError``, or ``SchemaVersionError`` (run
        ``rt-registry db upgrade``, or upgrade the software) when the schema
        does not fit.
        """
        from registry import migrations

        try:
            # It holds the districts' code hashes: 0600 from creation, as a district's.
            restrict_sqlite_files(url)
            # pool_pre_ping: replicas outlive database restarts and failovers.
            options = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
            # hide_parameters: a logged database error must not carry secrets or hashes.
            engine = sa.create_engine(url, hide_parameters=True, **options)
        except (sa.exc.SQLAlchemyError, ImportError) as exc:
            raise ConfigError(f"cannot open the registry database: {exc}") from exc
        if check_schema:
            try:
                if engine.dialect.name == "sqlite" and migrations.HISTORY.state(engine).empty:
                    migrations.HISTORY.upgrade(engine)
                migrations.HISTORY.check_at_head(engine)
            except ConfigError:
                engine.dispose()
                raise
        return cls(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def transaction(self) -> Iterator[StoreTransaction]:
        """One transaction: committed if the block returns, rolled back if it raises."""
        with self._engine.begin() as conn:
            yield StoreTransaction(conn)

    def close(self) -> None:
        self._engine.dispose()


class StoreTransaction:
    """Queries and updates within one transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # -- districts -------------------------------------------------------

    def add_district(
        self,
        code: DistrictCode,
        name: str,
        endpoints: Sequence[str],
        auth_code_hash: str,
        school_rows: Sequence[tuple[SchoolCode, str]],
        now: datetime,
    ) -> None:
        """Raises ``InvalidInput`` if the district or one of its schools is already registered."""
        if self.get_district(code) is not None:
            raise InvalidInput(f"district {code} is already registered")
        taken = self._conn.execute(
            sa.select(schools.c.cds_code).where(schools.c.cds_code.in_([s for s, _ in school_rows]))
        ).first()
        if taken is not None:
            raise InvalidInput(f"school {taken.cds_code} is already registered")
        self._conn.execute(
            districts.insert().values(
                code=code,
                name=name,
                status=STATUS_PENDING,
                endpoints=json.dumps(list(endpoints)),
                auth_code_hash=auth_code_hash,
                failed_attempts=0,
                last_lockout_at=None,
                created_at=now,
            )
        )
        if school_rows:
            self._conn.execute(
                schools.insert(),
                [{"cds_code": s, "district_code": code, "name": n} for s, n in school_rows],
            )

    def get_district(self, code: str, *, for_update: bool = False) -> DistrictRow | None:
        query = _DISTRICT.with_for_update() if for_update else _DISTRICT
        row = self._conn.execute(query, {"code": code}).first()
        return None if row is None else _district_row(row._mapping)

    def require_district(self, code: str, *, for_update: bool = False) -> DistrictRow:
        """Raises ``NotFound``."""
        row = self.get_district(code, for_update=for_update)
        if row is None:
            raise NotFound(f"district {code} is not registered")
        return row

    def list_districts(self) -> list[DistrictRow]:
        rows = self._conn.execute(sa.select(districts).order_by(districts.c.code))
        return [_district_row(r._mapping) for r in rows]

    def record_failed_attempt(self, code: str, *, locked_out_at: datetime | None) -> int:
        """Count one failed enrollment at the district, for the operator's view.

        ``locked_out_at``: the failure locked its source out (of this district or
        of all); the district itself is never locked. Returns the new count.
        """
        values: dict[str, Any] = {"failed_attempts": districts.c.failed_attempts + 1}
        if locked_out_at is not None:
            values["last_lockout_at"] = locked_out_at
        self._conn.execute(districts.update().where(districts.c.code == code).values(**values))
        count = self._conn.execute(
            sa.select(districts.c.failed_attempts).where(districts.c.code == code)
        ).scalar_one()
        return int(count)

    def consume_authorization_code(self, code: str, expected_hash: str) -> bool:
        """Clear the code hash if it is still ``expected_hash``: single use even under races."""
        result = self._conn.execute(
            districts.update()
            .where(districts.c.code == code, districts.c.auth_code_hash == expected_hash)
            .values(auth_code_hash=None, failed_attempts=0, last_lockout_at=None)
        )
        return result.rowcount == 1

    def set_authorization_code(self, code: str, auth_code_hash: str | None) -> None:
        """Replace the code hash (``None`` = no enrollment possible); the failure count restarts."""
        self._conn.execute(
            districts.update()
            .where(districts.c.code == code)
            .values(auth_code_hash=auth_code_hash, failed_attempts=0, last_lockout_at=None)
        )

    def set_district_state(
        self, code: str, *, status: str, endpoints: Sequence[str] | None = None
    ) -> None:
        values: dict[str, Any] = {"status": status}
        if endpoints is not None:
            values["endpoints"] = json.dumps(list(endpoints))
        self._conn.execute(districts.update().where(districts.c.code == code).values(**values))

    # -- schools ---------------------------------------------------------

    def schools_of(self, code: str) -> list[tuple[SchoolCode, str]]:
        rows = self._conn.execute(
            sa.select(schools.c.cds_code, schools.c.name)
            .where(schools.c.district_code == code)
            .order_by(schools.c.cds_code)
        )
        return [(SchoolCode(r.cds_code), r.name) for r in rows]

    def search_schools(
        self, query: str, limit: int, *, status: str = STATUS_ACTIVE
    ) -> list[SchoolRow]:
        """Schools of districts in ``status``: name contains ``query``, or code starts with it."""
        pattern = query.lower()
        rows = self._conn.execute(
            sa.select(
                schools.c.cds_code,
                schools.c.district_code,
                schools.c.name,
                districts.c.name.label("district_name"),
            )
            .join(districts, districts.c.code == schools.c.district_code)
            .where(
                districts.c.status == status,
                sa.or_(
                    sa.func.lower(schools.c.name).contains(pattern, autoescape=True),
                    schools.c.cds_code.startswith(query, autoescape=True),
                ),
            )
            .order_by(schools.c.name, schools.c.cds_code)
            .limit(limit)
        )
        return [
            SchoolRow(
                cds_code=SchoolCode(r.cds_code),
                district_code=DistrictCode(r.district_code),
                name=r.name,
                district_name=r.district_name,
            )
            for r in rows
        ]

    # -- entries ---------------------------------------------------------

    def current_entry(self, code: str) -> EntryRow | None:
        row = self._conn.execute(_CURRENT_ENTRY, {"code": code}).first()
        return None if row is None else _entry_row(row._mapping)

    def add_entry(self, entry: EntryRow) -> None:
        """Append a new version. A concurrent writer of the same version fails the transaction."""
        self._conn.execute(
            entries.insert().values(
                district_code=entry.district_code,
                version=entry.version,
                body=entry.body,
                signature=entry.signature,
                status=entry.status,
                tls_spki_sha256=entry.tls_spki_sha256,
                issued_at=entry.issued_at,
                expires_at=entry.expires_at,
            )
        )

    # -- the directory log -------------------------------------------------

    def append_leaf(self, code: str, version: int, leaf_hash: bytes) -> int:
        """Append one entry version's leaf; returns its index.

        The head row is updated first: a concurrent append waits for this
        transaction to end, then takes the index after ours.
        """
        self._conn.execute(
            log_head.update().where(log_head.c.id == 1).values(tree_size=log_head.c.tree_size + 1)
        )
        size = self.log_size() - 1
        self._conn.execute(
            log_leaves.insert().values(
                leaf_index=size, district_code=code, version=version, leaf_hash=leaf_hash
            )
        )
        return size

    def log_size(self) -> int:
        return int(
            self._conn.execute(
                sa.select(log_head.c.tree_size).where(log_head.c.id == 1)
            ).scalar_one()
        )

    def subtree_hashes(self, nodes: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The stored hashes of these complete subtrees (level 0: the leaves); missing: left out."""
        wanted = set(nodes)
        leaves = [i for level, i in wanted if level == 0]
        above = [(level, i) for level, i in wanted if level > 0]
        found: dict[tuple[int, int], bytes] = {}
        if leaves:
            for r in self._conn.execute(
                sa.select(log_leaves.c.leaf_index, log_leaves.c.leaf_hash).where(
                    log_leaves.c.leaf_index.in_(leaves)
                )
            ):
                found[0, int(r.leaf_index)] = bytes(r.leaf_hash)
        if above:
            for r in self._conn.execute(
                # OR of key lookups, not a row-value IN: SQLite searches the key for each.
                sa.select(log_nodes).where(
                    sa.or_(
                        *(
                            sa.and_(log_nodes.c.level == lv, log_nodes.c.node_index == i)
                            for lv, i in above
                        )
                    )
                )
            ):
                found[int(r.level), int(r.node_index)] = bytes(r.node_hash)
        return found

    def add_subtrees(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        """Store complete subtrees' hashes (level, index, hash), level >= 1."""
        if nodes:
            self._conn.execute(
                log_nodes.insert(),
                [{"level": lv, "node_index": i, "node_hash": h} for lv, i, h in nodes],
            )

    def stored_subtrees(self) -> dict[tuple[int, int], bytes]:
        """Every stored subtree hash above the leaves (for the audit)."""
        rows = self._conn.execute(sa.select(log_nodes))
        return {(int(r[0]), int(r[1])): bytes(r[2]) for r in rows}

    def leaf_index(self, code: str, version: int) -> int | None:
        return self._conn.execute(
            sa.select(log_leaves.c.leaf_index).where(
                log_leaves.c.district_code == code, log_leaves.c.version == version
            )
        ).scalar_one_or_none()

    def logged_entries(self) -> list[tuple[int, str, int, bytes, bytes | None]]:
        """Every leaf with the stored body it was computed from (None if the entry is gone)."""
        j = log_leaves.outerjoin(
            entries,
            sa.and_(
                entries.c.district_code == log_leaves.c.district_code,
                entries.c.version == log_leaves.c.version,
            ),
        )
        rows = self._conn.execute(
            sa.select(
                log_leaves.c.leaf_index,
                log_leaves.c.district_code,
                log_leaves.c.version,
                log_leaves.c.leaf_hash,
                entries.c.body,
            )
            .select_from(j)
            .order_by(log_leaves.c.leaf_index)
        )
        return [
            (int(r[0]), r[1], int(r[2]), bytes(r[3]), None if r[4] is None else bytes(r[4]))
            for r in rows
        ]

    def latest_checkpoint(self) -> tuple[int, bytes, bytes] | None:
        """(tree size, root hash, signed note) of the newest checkpoint."""
        row = self._conn.execute(
            sa.select(log_checkpoints).order_by(log_checkpoints.c.tree_size.desc()).limit(1)
        ).first()
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]))

    def checkpoint_notes(self) -> Iterator[tuple[int, bytes]]:
        """(tree size, note) of every checkpoint, newest first."""
        rows = self._conn.execute(
            sa.select(log_checkpoints.c.tree_size, log_checkpoints.c.note).order_by(
                log_checkpoints.c.tree_size.desc()
            )
        )
        for row in rows:
            yield int(row[0]), bytes(row[1])

    def checkpoint_note(self, size: int) -> bytes | None:
        return self._conn.execute(
            sa.select(log_checkpoints.c.note).where(log_checkpoints.c.tree_size == size)
        ).scalar_one_or_none()

    def add_checkpoint(self, size: int, root_hash: bytes, note: bytes) -> None:
        self._conn.execute(
            log_checkpoints.insert().values(tree_size=size, root_hash=root_hash, note=note)
        )

    def set_checkpoint_note(self, size: int, note: bytes) -> None:
        self._conn.execute(
            log_checkpoints.update().where(log_checkpoints.c.tree_size == size).values(note=note)
        )


def _district_row(m: Any) -> DistrictRow:
    return DistrictRow(
        code=DistrictCode(m["code"]),
        name=m["name"],
        status=m["status"],
        endpoints=tuple(json.loads(m["endpoints"])),
        auth_code_hash=m["auth_code_hash"],
        failed_attempts=int(m["failed_attempts"]),
        last_lockout_at=m["last_lockout_at"],
        created_at=m["created_at"],
    )


def _entry_row(m: Any) -> EntryRow:
    return EntryRow(
        district_code=DistrictCode(m["district_code"]),
        version=int(m["version"]),
        body=bytes(m["body"]),
        signature=bytes(m["signature"]),
        status=m["status"],
        tls_spki_sha256=bytes(m["tls_spki_sha256"]),
        issued_at=m["issued_at"],
        expires_at=m["expires_at"],
    )
