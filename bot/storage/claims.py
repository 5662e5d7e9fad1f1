"""Exactly-once handling of platform events across bot processes sharing one database."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from bot.storage.models import ClaimedEvent, utcnow

# Slack retries an event for a few minutes; a day is far past any redelivery.
KEEP_CLAIMS = timedelta(days=1)
PRUNE_EVERY = 500  # claims between two clean-ups of old ones


class EventClaims:
    """`claim(key)` is True for exactly one caller per key, whichever process it runs in.

    Synchronous, like the repository: call it on the database thread."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine)
        self._since_prune = 0

    def claim(self, key: str) -> bool:
        # The insert is the claim: a concurrent insert of the same key waits for this
        # transaction and then fails on the primary key, so no window lets both through.
        try:
            with self._sessions.begin() as session:
                session.add(ClaimedEvent(key=key[:255]))
        except IntegrityError:
            return False
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            self.prune()
        return True

    def prune(self, keep: timedelta = KEEP_CLAIMS) -> int:
        """Forget claims older than `keep`; returns how many."""
        with self._sessions.begin() as session:
            result = session.execute(
                delete(ClaimedEvent).where(ClaimedEvent.claimed_at < utcnow() - keep)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
