"""import ledger of runs: one entry per run of consecutive rows with one outcome

An imported transfer's ledger held one row per incoming row, which doubled the
database work of a large import. Now an entry covers ``row_count`` consecutive
incoming rows of one table with the same outcome (an IMPORTED run was written
under SQ ``local_sq``, ``local_sq + 1``, ...). The entries already there are
runs of one; the marker row of each transfer covers no incoming row.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 00:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Not in batch mode: ADD COLUMN with a constant default only changes the
    # table's definition, on SQLite as on PostgreSQL (11+), so a ledger of
    # millions of rows is not copied.
    op.add_column(
        "import_ledger",
        sa.Column("row_count", sa.Integer(), server_default=sa.text("1"), nullable=False),
    )
    op.execute("UPDATE import_ledger SET row_count = 0 WHERE table_code = '*'")


def downgrade() -> None:
    # Every run becomes one row per incoming row again, as the older code reads
    # the ledger: the run's first row is already there, the others are added.
    op.execute(
        """
        INSERT INTO import_ledger
            (transfer_id, table_code, row_index, outcome, local_sq, imported_at)
        WITH RECURSIVE run_rows (
            transfer_id, table_code, row_index, outcome, local_sq, imported_at, left_over
        ) AS (
            SELECT transfer_id, table_code, row_index + 1, outcome, local_sq + 1,
                   imported_at, row_count - 2
            FROM import_ledger
            WHERE row_count > 1
            UNION ALL
            SELECT transfer_id, table_code, row_index + 1, outcome, local_sq + 1,
                   imported_at, left_over - 1
            FROM run_rows
            WHERE left_over > 0
        )
        SELECT transfer_id, table_code, row_index, outcome, local_sq, imported_at
        FROM run_rows
        """
    )
    with op.batch_alter_table("import_ledger") as batch_op:
        batch_op.drop_column("row_count")
