"""staged_*: a received transfer's rows, validated as they arrived, for a set-based import

Format version 2 transfers are decrypted and validated frame by frame as they
arrive (DESIGN.md section 5); their rows wait here, one table per record
table, keyed by transfer and row index, until the import copies them into the
record tables with INSERT ... SELECT and deletes them.

Revision ID: 0010
Revises: 0004
Create Date: 2026-12-06 18:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, type, nullable) of each staged table's columns after transfer_id and row_index:
# the record table's columns as a transfer carries them (frozen here as of this revision).
_COLUMNS: dict[str, list[tuple[str, sa.types.TypeEngine[Any], bool]]] = {
    "staged_tst": [
        ("SQ", sa.Integer(), False),
        ("ID", sa.String(length=16), True),
        ("PT", sa.Integer(), True),
        ("TA", sa.String(length=16), True),
        ("TD", sa.Date(), True),
        ("GR", sa.Integer(), True),
        ("TY", sa.String(length=8), True),
        ("SS", sa.Integer(), True),
        ("PL", sa.String(length=8), True),
        ("PC", sa.Integer(), True),
        ("SRC", sa.String(length=8), True),
    ],
    "staged_cst": [
        ("SQ", sa.Integer(), False),
        ("ID", sa.String(length=16), True),
        ("SD", sa.String(length=32), True),
        ("TA", sa.String(length=16), True),
        ("TD", sa.Date(), True),
        ("SC", sa.Numeric(precision=9, scale=2), True),
        ("PL", sa.String(length=8), True),
        ("SRC", sa.String(length=8), True),
    ],
    "staged_cts": [
        ("SQ", sa.Integer(), False),
        ("NM", sa.String(length=16), True),
        ("DT", sa.Date(), True),
        ("TTL", sa.Integer(), True),
        ("ST1", sa.String(length=32), True),
        ("SC1", sa.Integer(), True),
        ("ST2", sa.String(length=32), True),
        ("SC2", sa.Integer(), True),
        ("ST3", sa.String(length=32), True),
        ("SC3", sa.Integer(), True),
        ("ST4", sa.String(length=32), True),
        ("SC4", sa.Integer(), True),
        ("ST5", sa.String(length=32), True),
        ("SC5", sa.Integer(), True),
        ("ST6", sa.String(length=32), True),
        ("SC6", sa.Integer(), True),
        ("ST7", sa.String(length=32), True),
        ("SC7", sa.Integer(), True),
        ("ST8", sa.String(length=32), True),
        ("SC8", sa.Integer(), True),
        ("ST9", sa.String(length=32), True),
        ("SC9", sa.Integer(), True),
        ("ST10", sa.String(length=32), True),
        ("SC10", sa.Integer(), True),
        ("ST11", sa.String(length=32), True),
        ("SC11", sa.Integer(), True),
        ("ST12", sa.String(length=32), True),
        ("SC12", sa.Integer(), True),
        ("ST13", sa.String(length=32), True),
        ("SC13", sa.Integer(), True),
        ("SRC", sa.String(length=8), True),
    ],
    "staged_his": [
        ("SQ", sa.Integer(), False),
        ("YR", sa.String(length=9), True),
        ("GR", sa.Integer(), True),
        ("TE", sa.String(length=4), True),
        ("CN", sa.String(length=12), True),
        ("CO", sa.String(length=60), True),
        ("MK", sa.String(length=4), True),
        ("CR", sa.Numeric(precision=6, scale=2), True),
        ("CC", sa.Numeric(precision=6, scale=2), True),
        ("ST", sa.String(length=14), True),
        ("CI", sa.String(length=2), True),
        ("RT", sa.String(length=2), True),
        ("SRC", sa.String(length=8), True),
        ("DC", sa.Date(), True),
        ("CH", sa.String(length=2), True),
        ("PF", sa.String(length=2), True),
    ],
    "staged_enr": [
        ("SQ", sa.Integer(), False),
        ("SC", sa.String(length=14), True),
        ("YR", sa.String(length=9), True),
        ("GR", sa.Integer(), True),
        ("ED", sa.Date(), True),
        ("LD", sa.Date(), True),
        ("ER", sa.String(length=4), True),
        ("SRC", sa.String(length=8), True),
    ],
    "staged_imm": [
        ("SQ", sa.Integer(), False),
        ("VC", sa.String(length=10), True),
        ("DN", sa.Integer(), True),
        ("DT", sa.Date(), True),
        ("SRC", sa.String(length=8), True),
    ],
    "staged_lac": [
        ("SQ", sa.Integer(), False),
        ("L1", sa.String(length=4), True),
        ("L2", sa.String(length=4), True),
        ("L3", sa.String(length=4), True),
        ("AC", sa.String(length=12), True),
        ("AD", sa.Date(), True),
        ("LV", sa.String(length=16), True),
        ("SRC", sa.String(length=8), True),
    ],
    "staged_pft": [
        ("SQ", sa.Integer(), False),
        ("TD", sa.Date(), True),
        ("CP", sa.String(length=32), True),
        ("SC", sa.Numeric(precision=9, scale=2), True),
        ("HF", sa.Boolean(), True),
        ("GR", sa.Integer(), True),
        ("SRC", sa.String(length=8), True),
    ],
}


def upgrade() -> None:
    for name, columns in _COLUMNS.items():
        op.create_table(
            name,
            sa.Column("transfer_id", sa.String(length=36), nullable=False),
            sa.Column("row_index", sa.Integer(), autoincrement=False, nullable=False),
            *(
                sa.Column(column, kind, autoincrement=False, nullable=nullable)
                for column, kind, nullable in columns
            ),
            sa.PrimaryKeyConstraint("transfer_id", "row_index", name=op.f(f"pk_{name}")),
        )


def downgrade() -> None:
    for name in reversed(list(_COLUMNS)):
        op.drop_table(name)
