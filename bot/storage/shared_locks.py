"""Per-conversation ordering across bot processes sharing one PostgreSQL database.

Within a process, `KeyedLocks` keeps a conversation's turns in order. Several processes on one
database add a PostgreSQL advisory lock per conversation, taken after the in-process lock and
held while the reply is generated and stored. The lock lives on a connection of its own, so a
process that dies mid-reply drops the connection and PostgreSQL releases the lock at once:
nobody waits on a dead process. Waiters are granted the lock in the order they asked.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from bot.messages import ConversationKey


def lock_id(key: ConversationKey) -> int:
    """A stable signed 64-bit id for the conversation (advisory locks are keyed by bigint)."""
    digest = hashlib.blake2b(f"conversation:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def libpq_url(url: URL) -> str:
    """The SQLAlchemy URL as psycopg takes it (no `+psycopg`), password included."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class AdvisoryLocks:
    """A PostgreSQL advisory lock per conversation (the chat's `SharedLock`)."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo

    @asynccontextmanager
    async def hold(self, key: ConversationKey) -> AsyncIterator[None]:
        import psycopg

        connection = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, application_name="nihongo-chat-bot lock"
        )
        try:
            # Blocks (without a thread: psycopg's async connection) until the other
            # process's turn is stored; cancelling closes the connection, dropping the wait.
            await connection.execute("SELECT pg_advisory_lock(%s)", (lock_id(key),))
            yield
        finally:
            await connection.close()  # ending the session releases the lock


def shared_conversation_locks(database: Engine) -> AdvisoryLocks | None:
    """Locks shared between processes for PostgreSQL; None for SQLite (one process a file)."""
    if database.dialect.name == "postgresql":
        return AdvisoryLocks(libpq_url(database.url))
    return None
