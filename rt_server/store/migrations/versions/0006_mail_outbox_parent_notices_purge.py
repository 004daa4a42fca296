"""mail outbox; parent notices (34 CFR 99.34); purge mark on received transfers

- ``mail_outbox``: notices by e-mail, queued in the transaction of the event
  that causes them, one per ``dedupe_key``.
- ``parent_notices``: the 99.34(a)(1) letter owed for a disclosure, until mailed.
- ``transfers.purged_at``: when retention deleted a received transfer's ciphertext.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mail_outbox",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("dedupe_key", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('QUEUED', 'SENT', 'FAILED')", name=op.f("ck_mail_outbox_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_outbox")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_mail_outbox_dedupe_key")),
    )
    op.create_index(
        "ix_mail_outbox_status_next_attempt_at",
        "mail_outbox",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_table(
        "parent_notices",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("disclosure_id", _BIG_ID, nullable=False),
        sa.Column("student_local_id", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mailed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("mailed_by", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["disclosure_id"],
            ["disclosures.id"],
            name=op.f("fk_parent_notices_disclosure_id_disclosures"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parent_notices")),
        sa.UniqueConstraint("disclosure_id", name=op.f("uq_parent_notices_disclosure_id")),
    )
    op.create_index(
        op.f("ix_parent_notices_student_local_id"),
        "parent_notices",
        ["student_local_id"],
        unique=False,
    )
    op.add_column("transfers", sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transfers") as batch_op:
        batch_op.drop_column("purged_at")
    op.drop_index(op.f("ix_parent_notices_student_local_id"), table_name="parent_notices")
    op.drop_table("parent_notices")
    op.drop_index("ix_mail_outbox_status_next_attempt_at", table_name="mail_outbox")
    op.drop_table("mail_outbox")
