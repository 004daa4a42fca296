"""outbound spool in the database: a transfer may be SEALING, owned by one attempt

The sealed ciphertext of an outbound transfer moves from a file under the data
directory into ``transfer_chunks``, so that any replica can resume any
delivery. While it is written the transfer is SEALING and ``seal_attempt``
names the attempt that owns it; SEALED still means "all of it is there, never
to be encrypted again".

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATES = "state IN ('SEALED', 'RECEIVING', 'RECEIVED')"
_NEW_STATES = "state IN ('SEALING', 'SEALED', 'RECEIVING', 'RECEIVED')"


def upgrade() -> None:
    with op.batch_alter_table("transfers") as batch_op:
        batch_op.add_column(sa.Column("seal_attempt", sa.String(length=36), nullable=True))
        batch_op.drop_constraint(op.f("ck_transfers_state"), type_="check")
        batch_op.create_check_constraint(op.f("ck_transfers_state"), _NEW_STATES)


def downgrade() -> None:
    # An unfinished seal has nothing worth keeping: the next attempt starts over.
    op.execute("DELETE FROM transfers WHERE state = 'SEALING'")
    with op.batch_alter_table("transfers") as batch_op:
        batch_op.drop_constraint(op.f("ck_transfers_state"), type_="check")
        batch_op.create_check_constraint(op.f("ck_transfers_state"), _OLD_STATES)
        batch_op.drop_column("seal_attempt")
