"""initial district schema

Revision ID: 0001
Revises: (none: the schema as it was before migrations)
Create Date: 2026-11-29 22:32:53.917208
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
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=True),
        sa.Column("student_local_id", sa.String(length=16), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_request_id"), ["request_id"], unique=False)

    op.create_table(
        "import_ledger",
        sa.Column("transfer_id", sa.String(length=36), nullable=False),
        sa.Column("table_code", sa.String(length=3), nullable=False),
        sa.Column("row_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("local_sq", sa.Integer(), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "transfer_id", "table_code", "row_index", name=op.f("pk_import_ledger")
        ),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("to_district", sa.String(length=7), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('request', 'decision', 'delivery', 'receipt', 'import_notice', 'message')",
            name=op.f("ck_outbox_kind"),
        ),
        sa.CheckConstraint("status IN ('QUEUED', 'DONE', 'FAILED')", name=op.f("ck_outbox_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_request_id"), ["request_id"], unique=False)
        batch_op.create_index(
            "ix_outbox_status_next_attempt_at", ["status", "next_attempt_at"], unique=False
        )

    op.create_table(
        "seen_messages",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_seen_messages")),
    )
    op.create_table(
        "students",
        sa.Column("local_id", sa.String(length=16), nullable=False),
        sa.Column("ssid", sa.String(length=10), nullable=True),
        sa.Column("legal_first_name", sa.String(length=50), nullable=False),
        sa.Column("legal_middle_name", sa.String(length=50), nullable=True),
        sa.Column("legal_last_name", sa.String(length=50), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("gender", sa.String(length=1), nullable=True),
        sa.Column("school", sa.String(length=14), nullable=True),
        sa.Column("last_name_key", sa.String(length=50), nullable=False),
        sa.Column("first_name_key", sa.String(length=50), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("local_id", name=op.f("pk_students")),
        sa.UniqueConstraint("ssid", name=op.f("uq_students_ssid")),
    )
    with op.batch_alter_table("students", schema=None) as batch_op:
        batch_op.create_index("ix_students_birth_date", ["birth_date"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_students_last_name_key"), ["last_name_key"], unique=False
        )

    op.create_table(
        "CST",
        sa.Column("PID", sa.String(length=16), nullable=False),
        sa.Column("SQ", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ID", sa.String(length=16), nullable=True),
        sa.Column("SD", sa.String(length=32), nullable=True),
        sa.Column("TA", sa.String(length=16), nullable=True),
        sa.Column("TD", sa.Date(), nullable=True),
        sa.Column("SC", sa.Numeric(precision=9, scale=2), nullable=True),
        sa.Column("PL", sa.String(length=8), nullable=True),
        sa.Column("SRC", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(
            ["PID"], ["students.local_id"], name=op.f("fk_CST_PID_students"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("PID", "SQ", name=op.f("pk_CST")),
    )
    with op.batch_alter_table("CST", schema=None) as batch_op:
        batch_op.create_index("ix_CST_natural_key", ["PID", "ID", "SD", "TA"], unique=False)

    op.create_table(
        "CTS",
        sa.Column("PID", sa.String(length=16), nullable=False),
        sa.Column("SQ", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("NM", sa.String(length=16), nullable=True),
        sa.Column("DT", sa.Date(), nullable=True),
        sa.Column("TTL", sa.Integer(), nullable=True),
        sa.Column("ST1", sa.String(length=32), nullable=True),
        sa.Column("SC1", sa.Integer(), nullable=True),
        sa.Column("ST2", sa.String(length=32), nullable=True),
        sa.Column("SC2", sa.Integer(), nullable=True),
        sa.Column("ST3", sa.String(length=32), nullable=True),
        sa.Column("SC3", sa.Integer(), nullable=True),
        sa.Column("ST4", sa.String(length=32), nullable=True),
        sa.Column("SC4", sa.Integer(), nullable=True),
        sa.Column("ST5", sa.String(length=32), nullable=True),
        sa.Column("SC5", sa.Integer(), nullable=True),
        sa.Column("ST6", sa.String(length=32), nullable=True),
        sa.Column("SC6", sa.Integer(), nullable=True),
        sa.Column("ST7", sa.String(length=32), nullable=True),
        sa.Column("SC7", sa.Integer(), nullable=True),
        sa.Column("ST8", sa.String(length=32), nullable=True),
        sa.Column("SC8", sa.Integer(), nullable=True),
        sa.Column("ST9", sa.String(length=32), nullable=True),
        sa.Column("SC9", sa.Integer(), nullable=True),
        sa.Column("ST10", sa.String(length=32), nullable=True),
        sa.Column("SC10", sa.Integer(), nullable=True),
        sa.Column("ST11", sa.String(length=32), nullable=True),
        sa.Column("SC11", sa.Integer(), nullable=True),
        sa.Column("ST12", sa.String(length=32), nullable=True),
        sa.Column("SC12", sa.Integer(), nullable=True),
        sa.Column("ST13", sa.String(length=32), nullable=True),
        sa.Column("SC13", sa.Integer(), nullable=True),
        sa.Column("SRC", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(
            ["PID"], ["students.local_id"], name=op.f("fk_CTS_PID_students"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("PID", "SQ", name=op.f("pk_CTS")),
    )
    with op.batch_alter_table("CTS", schema=None) as batch_op:
        batch_op.create_index("ix_CTS_natural_key", ["PID", "NM", "DT"], unique=False)

    op.create_table(
        "ENR",
        sa.Column("PID", sa.String(length=16), nullable=False),
        sa.Column("SQ", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("SC", sa.String(length=14), nullable=True),
        sa.Column("YR", sa.String(length=9), nullable=True),
        sa.Column("GR", sa.Integer(), nullable=True),
        sa.Column("ED", sa.Date(), nullable=True),
        sa.Column("LD", sa.Date(), nullable=True),
        sa.Column("ER", sa.String(length=4), nullable=True),
        sa.Column("SRC", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(
            ["PID"], ["students.local_id"], name=op.f("fk_ENR_PID_students"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("PID", "SQ", name=op.f("pk_ENR")),
    )
    with op.batch_alter_table("ENR", schema=None) as batch_op:
        batch_op.create_index("ix_ENR_natural_key", ["PID", "SC", "YR", "ED"], unique=False)

    op.create_table(
        "HIS",
        sa.Column("PID", sa.String(length=16), nullable=False),
        sa.Column("SQ", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("YR", sa.String(length=9), nullable=True),
        sa.Column("GR", sa.Integer(), nullable=True),
        sa.Column("TE", sa.String(length=4), nullable=True),
        sa.Column("CN", sa.String(length=12), nullable=True),
        sa.Column("CO", sa.String(length=60), nullable=True),
        sa.Column("MK", sa.String(length=4), nullable=True),
        sa.Column("CR", sa.Numeric(precision=6, scale=2), nullable=True),
        sa.Column("CC", sa.Numeric(precision=6, scale=2), nullable=True),
        sa.Column("ST", sa.String(length=14), nullable=True),
        sa.Column("CI", sa.String(length=2), nullable=True),
        sa.Column("RT", sa.String(length=2), nullable=True),
        sa.Column("DC", sa.Date(), nullable=True),
        sa.Column("CH", sa.String(length=2), nullable=True),
        sa.Column("PF", sa.String(length=2), nullable=True),
        sa.Column("SRC", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(
            ["PID"], ["students.local_id"], name=op.f("fk_HIS_PID_students"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("PID", "SQ", name=op.f("pk_HIS")),
    )
    with op.batch_alter_table("HIS", schema=None) as batch_op:
        batch_op.create_index("ix_HIS_natural_key", ["PID", "YR", "TE", "CN", "ST"], unique=False)

    op.create_table(
        "IMM",
        sa.Column("PID", sa.String(length=16), nullable=False),
        sa.Column("SQ", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("VC", sa.String(length=10), nullable=True),
        sa.Column("DN", sa.Integer(), nullable=True),
        sa.Column("DT", sa.Date(), nullable=True),
        sa.Column("SRC", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(
            ["PID"], ["students.local_id"], name=op.f("fk_IMM_PID_students"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("PID", "SQ", name=op.f("pk_IMM")),
    )
    with op.batch_alter_table("IMM", schema=None) as batch_op:
        batch_op.create_index("ix_IMM_natural_key", ["PID", "VC", "DT"], unique=False)

    op.create_table(
        "LAC",
        sa.Column("PID", sa.String(length=16), nullable=False),
        sa.Column("SQ", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("L1", sa.String(length=4), nullable=True),
        sa.Column("L2", sa.String(length=4), nullable=True),
        sa.Column("L3", sa.String(length=4), nullable=True),
        sa.Column("AC", sa.String(length=12), nullable=True),
        sa.Column("AD", sa.Date(), nullable=True),
        sa.Column("LV", sa.String(length=16), nullable=True),
        sa.Column("SRC", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(
            ["PID"], ["students.local_id"], name=op.f("fk_LAC_PID_students"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("PID", "SQ", name=op.f("pk_LAC")),
    )
    with op.batch_alter_table("LAC", schema=None) as batch_op:
        batch_op.create_index("ix_LAC_natural_key", ["PID", "AC", "AD"], unique=False)

    op.create_table(
        "PFT",
        sa.Column("PID", sa.String(length=16), nullable=False),
        sa.Column("SQ", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("TD", sa.Date(), nullable=True),
        sa.Column("CP", sa.String(length=32), nullable=True),
        sa.Column("SC", sa.Numeric(precision=9, scale=2), nullable=True),
        sa.Column("HF", sa.Boolean(), nullable=True),
        sa.Column("GR", sa.Integer(), nullable=True),
        sa.Column("SRC", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(
            ["PID"], ["students.local_id"], name=op.f("fk_PFT_PID_students"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("PID", "SQ", name=op.f("pk_PFT")),
    )
    with op.batch_alter_table("PFT", schema=None) as batch_op:
        batch_op.create_index("ix_PFT_natural_key", ["PID", "TD", "CP"], unique=False)

    op.create_table(
        "TST",
        sa.Column("PID", sa.String(length=16), nullable=False),
        sa.Column("SQ", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ID", sa.String(length=16), nullable=True),
        sa.Column("PT", sa.Integer(), nullable=True),
        sa.Column("TA", sa.String(length=16), nullable=True),
        sa.Column("TD", sa.Date(), nullable=True),
        sa.Column("GR", sa.Integer(), nullable=True),
        sa.Column("TY", sa.String(length=8), nullable=True),
        sa.Column("SS", sa.Integer(), nullable=True),
        sa.Column("PL", sa.String(length=8), nullable=True),
        sa.Column("PC", sa.Integer(), nullable=True),
        sa.Column("SRC", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(
            ["PID"], ["students.local_id"], name=op.f("fk_TST_PID_students"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("PID", "SQ", name=op.f("pk_TST")),
    )
    with op.batch_alter_table("TST", schema=None) as batch_op:
        batch_op.create_index("ix_TST_natural_key", ["PID", "ID", "PT", "TA"], unique=False)

    op.create_table(
        "disclosures",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("student_local_id", sa.String(length=16), nullable=False),
        sa.Column("receiving_district", sa.String(length=7), nullable=False),
        sa.Column("receiving_school", sa.String(length=14), nullable=False),
        sa.Column("tables", sa.String(length=40), nullable=False),
        sa.Column("disclosed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("legal_basis", sa.String(length=200), nullable=False),
        sa.Column("acting_staff", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["student_local_id"],
            ["students.local_id"],
            name=op.f("fk_disclosures_student_local_id_students"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disclosures")),
    )
    with op.batch_alter_table("disclosures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_disclosures_student_local_id"), ["student_local_id"], unique=False
        )

    op.create_table(
        "requests",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=500), nullable=True),
        sa.Column("other_district", sa.String(length=7), nullable=False),
        sa.Column("requesting_district", sa.String(length=7), nullable=False),
        sa.Column("requesting_school", sa.String(length=14), nullable=False),
        sa.Column("prior_district", sa.String(length=7), nullable=False),
        sa.Column("prior_school", sa.String(length=14), nullable=False),
        sa.Column("ssid", sa.String(length=10), nullable=True),
        sa.Column("legal_first_name", sa.String(length=50), nullable=True),
        sa.Column("legal_middle_name", sa.String(length=50), nullable=True),
        sa.Column("legal_last_name", sa.String(length=50), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("gender", sa.String(length=10), nullable=True),
        sa.Column("prior_local_id", sa.String(length=16), nullable=True),
        sa.Column("local_student_id", sa.String(length=16), nullable=True),
        sa.Column("requested_by", sa.String(length=100), nullable=True),
        sa.Column("tables_requested", sa.String(length=40), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=True),
        sa.Column("tables_approved", sa.String(length=40), nullable=True),
        sa.Column("reject_reason", sa.String(length=32), nullable=True),
        sa.Column("reject_text", sa.String(length=1000), nullable=True),
        sa.Column("decision_id", sa.String(length=36), nullable=True),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("transfer_id", sa.String(length=36), nullable=True),
        sa.Column("request_envelope", sa.LargeBinary(), nullable=False),
        sa.Column("decision_envelope", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivery_bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("delivery_bytes_done", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "direction IN ('OUTBOUND', 'INBOUND')", name=op.f("ck_requests_direction")
        ),
        sa.ForeignKeyConstraint(
            ["local_student_id"],
            ["students.local_id"],
            name=op.f("fk_requests_local_student_id_students"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_requests")),
    )
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.create_index("ix_requests_created_at", ["created_at"], unique=False)
        batch_op.create_index("ix_requests_direction_status", ["direction", "status"], unique=False)
        batch_op.create_index("ix_requests_transfer_id", ["transfer_id"], unique=False)

    op.create_table(
        "thread_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("from_district", sa.String(length=7), nullable=True),
        sa.Column("author", sa.String(length=100), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("system", sa.Boolean(), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.request_id"],
            name=op.f("fk_thread_messages_request_id_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_thread_messages")),
        sa.UniqueConstraint("message_id", name=op.f("uq_thread_messages_message_id")),
    )
    with op.batch_alter_table("thread_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_thread_messages_request_id_sent_at", ["request_id", "sent_at"], unique=False
        )

    op.create_table(
        "transfers",
        sa.Column("transfer_id", sa.String(length=36), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("header", sa.LargeBinary(), nullable=False),
        sa.Column("header_signature", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext_bytes", sa.BigInteger(), nullable=False),
        sa.Column("received_offset", sa.BigInteger(), nullable=False),
        sa.Column("trailer_signature", sa.LargeBinary(), nullable=True),
        sa.Column("ciphertext_sha512", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("table_counts", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('SEALED', 'RECEIVING', 'RECEIVED')", name=op.f("ck_transfers_state")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.request_id"],
            name=op.f("fk_transfers_request_id_requests"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("transfer_id", name=op.f("pk_transfers")),
    )
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_transfers_request_id"), ["request_id"], unique=False)

    op.create_table(
        "transfer_chunks",
        sa.Column("transfer_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["transfer_id"],
            ["transfers.transfer_id"],
            name=op.f("fk_transfer_chunks_transfer_id_transfers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("transfer_id", "seq", name=op.f("pk_transfer_chunks")),
        sa.UniqueConstraint(
            "transfer_id", "offset", name=op.f("uq_transfer_chunks_transfer_id_offset")
        ),
    )


def downgrade() -> None:
    op.drop_table("transfer_chunks")
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transfers_request_id"))

    op.drop_table("transfers")
    with op.batch_alter_table("thread_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_thread_messages_request_id_sent_at")

    op.drop_table("thread_messages")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_index("ix_requests_transfer_id")
        batch_op.drop_index("ix_requests_direction_status")
        batch_op.drop_index("ix_requests_created_at")

    op.drop_table("requests")
    with op.batch_alter_table("disclosures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_disclosures_student_local_id"))

    op.drop_table("disclosures")
    with op.batch_alter_table("TST", schema=None) as batch_op:
        batch_op.drop_index("ix_TST_natural_key")

    op.drop_table("TST")
    with op.batch_alter_table("PFT", schema=None) as batch_op:
        batch_op.drop_index("ix_PFT_natural_key")

    op.drop_table("PFT")
    with op.batch_alter_table("LAC", schema=None) as batch_op:
        batch_op.drop_index("ix_LAC_natural_key")

    op.drop_table("LAC")
    with op.batch_alter_table("IMM", schema=None) as batch_op:
        batch_op.drop_index("ix_IMM_natural_key")

    op.drop_table("IMM")
    with op.batch_alter_table("HIS", schema=None) as batch_op:
        batch_op.drop_index("ix_HIS_natural_key")

    op.drop_table("HIS")
    with op.batch_alter_table("ENR", schema=None) as batch_op:
        batch_op.drop_index("ix_ENR_natural_key")

    op.drop_table("ENR")
    with op.batch_alter_table("CTS", schema=None) as batch_op:
        batch_op.drop_index("ix_CTS_natural_key")

    op.drop_table("CTS")
    with op.batch_alter_table("CST", schema=None) as batch_op:
        batch_op.drop_index("ix_CST_natural_key")

    op.drop_table("CST")
    with op.batch_alter_table("students", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_students_last_name_key"))
        batch_op.drop_index("ix_students_birth_date")

    op.drop_table("students")
    op.drop_table("seen_messages")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_status_next_attempt_at")
        batch_op.drop_index(batch_op.f("ix_outbox_request_id"))

    op.drop_table("outbox")
    op.drop_table("import_ledger")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_request_id"))

    op.drop_table("audit_log")
