"""the directory log: log_leaves, log_nodes, log_head and log_checkpoints (issue 17)

Every directory entry version the registry signs becomes a leaf of an RFC 9162
Merkle tree (``registry.tlog``); signed checkpoints of it are kept, with the
witnesses' cosignatures. Upgrading logs the entries already signed, oldest
first (by issue time, then district and version), so the log covers the whole
history from the start, with the hashes of its complete subtrees (log_nodes,
from which proofs are made). A downgrade drops the log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 18:00:00
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "log_leaves",
        sa.Column("leaf_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("district_code", sa.String(length=7), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("leaf_index", name=op.f("pk_log_leaves")),
        sa.UniqueConstraint(
            "district_code", "version", name=op.f("uq_log_leaves_district_code_version")
        ),
    )
    op.create_table(
        "log_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("node_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("node_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "node_index", name=op.f("pk_log_nodes")),
    )
    # One row: the tree size, updated first by every append (serializes them).
    op.create_table(
        "log_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_head")),
    )
    op.create_table(
        "log_checkpoints",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name=op.f("pk_log_checkpoints")),
    )
    conn = op.get_bind()
    entries = sa.table(
        "entries",
        sa.column("district_code", sa.String),
        sa.column("version", sa.BigInteger),
        sa.column("body", sa.LargeBinary),
        sa.column("issued_at", sa.DateTime),
    )
    leaves = sa.table(
        "log_leaves",
        sa.column("leaf_index", sa.BigInteger),
        sa.column("district_code", sa.String),
        sa.column("version", sa.BigInteger),
        sa.column("leaf_hash", sa.LargeBinary),
    )
    rows = conn.execute(
        sa.select(entries.c.district_code, entries.c.version, entries.c.body).order_by(
            entries.c.issued_at, entries.c.district_code, entries.c.version
        )
    ).all()
    hashes: list[bytes] = []
    for index, (code, version, body) in enumerate(rows):
        # RFC 9162 2.1.1 leaf hash, as rt_client.merkle.leaf_hash (a migration is frozen code).
        leaf = hashlib.sha256(b"\x00" + bytes(body)).digest()
        hashes.append(leaf)
        conn.execute(
            leaves.insert().values(
                leaf_index=index, district_code=code, version=version, leaf_hash=leaf
            )
        )
    # Complete subtrees, level by level (RFC 9162 interior node: SHA-256(0x01 || l || r)).
    nodes = sa.table(
        "log_nodes",
        sa.column("level", sa.Integer),
        sa.column("node_index", sa.BigInteger),
        sa.column("node_hash", sa.LargeBinary),
    )
    level = 0
    while len(hashes) > 1:
        hashes = [
            hashlib.sha256(b"\x01" + hashes[i] + hashes[i + 1]).digest()
            for i in range(0, len(hashes) - 1, 2)
        ]
        level += 1
        conn.execute(
            nodes.insert(),
            [{"level": level, "node_index": i, "node_hash": h} for i, h in enumerate(hashes)],
        )
    head = sa.table("log_head", sa.column("id", sa.Integer), sa.column("tree_size", sa.BigInteger))
    conn.execute(head.insert().values(id=1, tree_size=len(rows)))


def downgrade() -> None:
    op.drop_table("log_checkpoints")
    op.drop_table("log_head")
    op.drop_table("log_nodes")
    op.drop_table("log_leaves")
