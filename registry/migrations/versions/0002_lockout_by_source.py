"""failed enrollments lock out their source, not the district: districts.last_lockout_at

A district is no longer locked (``locked_until``): its code is public, so a
district-wide lock let anyone keep it from enrolling. Failed attempts now lock
out the address they came from, in the serving process; the district keeps
its count of failed attempts and, new, when a source was last locked out
because of them, for the operator's ``rt-registry district list``.

Upgrading lifts any district lock in force (that is the point) and keeps the
failure counts; when an old lock began is not recorded, so ``last_lockout_at``
starts empty. A downgrade leaves no district locked.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("districts") as batch_op:
        batch_op.add_column(sa.Column("last_lockout_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_column("locked_until")


def downgrade() -> None:
    with op.batch_alter_table("districts") as batch_op:
        batch_op.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_column("last_lockout_at")
