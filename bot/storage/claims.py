"""Exactly-once handling of platform events across bot processes sharing one database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from bot.storage.tables import ClaimedEvent, utcnow

# A claim not renewed or done within its lease belongs to a process that died: the next
# delivery of the event (Slack retries after about 1 and 5 minutes) may claim it again. The
# claimant renews it every RENEW_EVERY while it answers, however long the reply takes.
CLAIM_LEASE = timedelta(seconds=60)
RENEW_EVERY = CLAIM_LEASE / 3
# Slack retries an event for a few minutes; a day is far past any redelivery.
KEEP_CLAIMS = timedelta(days=1)
PRUNE_EVERY = 500  # claims between two clean-ups of old ones


class EventClaims:
    """`claim(key)` is True for exactly one caller per key at a time, whichever process it runs
    in; the claimant calls `renew(key)` while it works and `done(key)` once answered.

    Synchronous, like the repository: call it on the database thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        lease: timedelta = CLAIM_LEASE,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessionmaker(engine)
        self._since_prune = 0
        self.lease = lease
        self._clock = clock

    def claim(self, key: str) -> bool:
        key, now = key[:255], self._clock()
        # The insert is the claim: a concurrent insert of the same key waits for this
        # transaction and then fails on the primary key, so no window lets both through.
        try:
            with self._sessions.begin() as session:
                session.add(ClaimedEvent(key=key, claimed_at=now))
        except IntegrityError:
            return self._take_over(key, now)
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            self.prune()
        return True

    def _take_over(self, key: str, now: datetime) -> bool:
        # One conditional UPDATE: of two processes taking over at once, the second re-reads
        # the row the first wrote (PostgreSQL re-checks the WHERE after the lock; SQLite
        # serialises writers), finds a fresh lease and changes nothing.
        with self._sessions.begin() as session:
            result = session.execute(
                update(ClaimedEvent)
                .where(
                    ClaimedEvent.key == key,
                    ClaimedEvent.done_at.is_(None),
                    ClaimedEvent.claimed_at < now - self.lease,
                )
                .values(claimed_at=now)
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    def renew(self, key: str) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(ClaimedEvent)
                .where(ClaimedEvent.key == key[:255], ClaimedEvent.done_at.is_(None))
                .values(claimed_at=self._clock())
            )

    def done(self, key: str) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(ClaimedEvent)
                .where(ClaimedEvent.key == key[:255])
                .values(done_at=self._clock())
            )

    def prune(self, keep: timedelta = KEEP_CLAIMS) -> int:
        """Forget claims older than `keep`; returns how many."""
        with self._sessions.begin() as session:
            result = session.execute(
                delete(ClaimedEvent).where(ClaimedEvent.claimed_at < self._clock() - keep)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
