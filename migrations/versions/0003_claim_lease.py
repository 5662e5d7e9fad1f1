"""claim lease: a claimed event not answered in time may be claimed again

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 03:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("claimed_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("done_at", sa.DateTime(), nullable=True))
    # Claims made before leases existed were answered (or lost long ago): never again.
    op.execute("UPDATE claimed_events SET done_at = claimed_at")


def downgrade() -> None:
    with op.batch_alter_table("claimed_events", schema=None) as batch_op:
        batch_op.drop_column("done_at")
