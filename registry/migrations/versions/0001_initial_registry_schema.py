"""initial registry schema

Revision ID: 0001
Revises: (none: the schema as it was before migrations)
Create Date: 2026-11-29 22:32:53.937575
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "districts",
        sa.Column("code", sa.String(length=7), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("endpoints", sa.Text(), nullable=False),
        sa.Column("auth_code_hash", sa.String(length=200), nullable=True),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_districts")),
    )
    op.create_table(
        "entries",
        sa.Column("district_code", sa.String(length=7), nullable=False),
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tls_spki_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["district_code"], ["districts.code"], name=op.f("fk_entries_district_code_districts")
        ),
        sa.PrimaryKeyConstraint("district_code", "version", name=op.f("pk_entries")),
    )
    op.create_table(
        "schools",
        sa.Column("cds_code", sa.String(length=14), nullable=False),
        sa.Column("district_code", sa.String(length=7), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["district_code"], ["districts.code"], name=op.f("fk_schools_district_code_districts")
        ),
        sa.PrimaryKeyConstraint("cds_code", name=op.f("pk_schools")),
    )


def downgrade() -> None:
    op.drop_table("schools")
    op.drop_table("entries")
    op.drop_table("districts")
