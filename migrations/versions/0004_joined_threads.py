"""joined threads: one row per thread, shared by bot processes (was a JSON list per channel)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 03:15:00
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_PREFIX = "slack:threads:"  # bot_state keys slack:threads:<team>:<channel>, a JSON list


def upgrade() -> None:
    table = op.create_table(
        "joined_threads",
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("workspace_id", sa.String(length=128), nullable=False),
        sa.Column("channel_id", sa.String(length=128), nullable=False),
        sa.Column("thread_id", sa.String(length=128), nullable=False),
        sa.Column("joined_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("platform", "workspace_id", "channel_id", "thread_id"),
    )
    connection = op.get_bind()
    old = connection.execute(
        sa.text("SELECT key, value FROM bot_state WHERE key LIKE :prefix"),
        {"prefix": OLD_PREFIX + "%"},
    ).all()
    rows, now = {}, datetime.now(UTC)
    for key, value in old:
        team, _, channel = key[len(OLD_PREFIX) :].partition(":")
        try:
            threads = json.loads(value)
        except ValueError:
            continue
        for ts in threads if isinstance(threads, list) else []:
            rows[(team, channel, str(ts))] = {
                "platform": "slack",
                "workspace_id": team,
                "channel_id": channel,
                "thread_id": str(ts),
                "joined_at": now,
            }
    if rows:
        op.bulk_insert(table, list(rows.values()))
    connection.execute(
        sa.text("DELETE FROM bot_state WHERE key LIKE :prefix"), {"prefix": OLD_PREFIX + "%"}
    )


def downgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.text(
            "SELECT workspace_id, channel_id, thread_id FROM joined_threads "
            "WHERE platform = 'slack' ORDER BY joined_at, thread_id"
        )
    ).all()
    channels: dict[str, list[str]] = {}
    for team, channel, ts in rows:
        channels.setdefault(f"{OLD_PREFIX}{team}:{channel}", []).append(ts)
    for key, threads in channels.items():
        connection.execute(
            sa.text("INSERT INTO bot_state (key, value) VALUES (:key, :value)"),
            {"key": key[:64], "value": json.dumps(threads[-500:])},
        )
    op.drop_table("joined_threads")
