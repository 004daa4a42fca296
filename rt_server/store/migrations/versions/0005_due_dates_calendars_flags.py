"""the law's clocks and duties: due dates, school calendars, student flags, notices

- ``requests``: the foster-youth mark (EC 49069.5) and the request for
  suspension/expulsion records (EC 48201(b)) from the signed request, the
  answer to it, the withholding of grades (EC 48904.3) from the decision, the
  due date with the rule that set it and why, and why an approval is held
  (EC 49068.6). All nullable, without defaults: no table copy; NULL reads as
  "no" for the flags and "not computed" for the due date of requests received
  before this revision.
- ``school_calendars``: each school's terms and the weekdays without school.
- ``student_flags``: WITHHOLD_GRADES and MISSING_CHILD, per student.
- ``compliance_notices``: notices for the mail side to send, once per key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REQUEST_COLUMNS = (
    ("foster_youth", sa.Boolean()),
    ("discipline_requested", sa.Boolean()),
    ("discipline_answer", sa.String(length=16)),
    ("grades_withheld", sa.Boolean()),
    ("due_on", sa.Date()),
    ("due_rule", sa.String(length=20)),
    ("due_note", sa.String(length=300)),
    ("held_reason", sa.String(length=300)),
    ("received_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    for name, kind in _REQUEST_COLUMNS:
        op.add_column("requests", sa.Column(name, kind, nullable=True))
    op.create_table(
        "school_calendars",
        sa.Column("school", sa.String(length=14), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("closed_days", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("loaded_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("school", "first_day", name=op.f("pk_school_calendars")),
    )
    op.create_table(
        "student_flags",
        sa.Column("student_local_id", sa.String(length=16), nullable=False),
        sa.Column("flag", sa.String(length=24), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("set_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["student_local_id"],
            ["students.local_id"],
            name=op.f("fk_student_flags_student_local_id_students"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("student_local_id", "flag", name=op.f("pk_student_flags")),
    )
    op.create_table(
        "compliance_notices",
        sa.Column("dedupe_key", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=True),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("dedupe_key", name=op.f("pk_compliance_notices")),
    )
    op.create_index(op.f("ix_compliance_notices_request_id"), "compliance_notices", ["request_id"])


def downgrade() -> None:
    # Calendars, flags and unsent notices go with their tables (back up first).
    op.drop_index(op.f("ix_compliance_notices_request_id"), table_name="compliance_notices")
    op.drop_table("compliance_notices")
    op.drop_table("student_flags")
    op.drop_table("school_calendars")
    with op.batch_alter_table("requests") as batch_op:
        for name, _ in reversed(_REQUEST_COLUMNS):
            batch_op.drop_column(name)
