"""claimed events: answer a platform event once across bot processes

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "claimed_events",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("claimed_events", schema=None) as batch_op:
        batch_op.create_index("ix_claimed_events_claimed_at", ["claimed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("claimed_events", schema=None) as batch_op:
        batch_op.drop_index("ix_claimed_events_claimed_at")
    op.drop_table("claimed_events")
