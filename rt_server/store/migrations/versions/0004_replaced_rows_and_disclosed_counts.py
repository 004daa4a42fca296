"""replaced row versions; the rows counted in each disclosure

- ``replaced_rows``: accepting a CONFLICT at import now updates our row in
  place (DESIGN.md section 4 step 6); the row's old values are kept here, as
  the audit log's ``detail`` holds no student data.
- ``disclosures.table_counts``: the record of disclosure (34 CFR 99.32) names
  the tables actually sent and their row counts ("HIS=2,ENR=1"). Entries from
  before this revision have none (NULL): their ``tables`` are what was
  approved, which may be more than what was sent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replaced_rows",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("student_local_id", sa.String(length=16), nullable=False),
        sa.Column("table_code", sa.String(length=3), nullable=False),
        sa.Column("sq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("old_values", sa.Text(), nullable=False),
        sa.Column("transfer_id", sa.String(length=36), nullable=False),
        sa.Column("row_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("replaced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replaced_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["student_local_id"],
            ["students.local_id"],
            name=op.f("fk_replaced_rows_student_local_id_students"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replaced_rows")),
    )
    op.create_index(
        "ix_replaced_rows_student",
        "replaced_rows",
        ["student_local_id", "table_code", "sq"],
        unique=False,
    )
    # A nullable column without a default: no table copy on either database.
    op.add_column("disclosures", sa.Column("table_counts", sa.String(length=200), nullable=True))


def downgrade() -> None:
    # The kept versions of replaced rows go with their table (back the database
    # up first); disclosures keep their tables, without row counts.
    with op.batch_alter_table("disclosures") as batch_op:
        batch_op.drop_column("table_counts")
    op.drop_index("ix_replaced_rows_student", table_name="replaced_rows")
    op.drop_table("replaced_rows")
