"""Event claims on a real SQLite file and a real PostgreSQL server: one claimant per event, and a
lease so that an event whose claimant died is answered when the platform delivers it again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.storage.claims import CLAIM_LEASE, EventClaims
from bot.storage.database import create_db_engine, upgrade_database

RUN_ON_BOTH_DATABASES = True


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def two_processes(database_url: str, clock: Clock) -> tuple[EventClaims, EventClaims]:
    engine = create_db_engine(database_url)
    upgrade_database(engine)
    return EventClaims(engine, clock=clock), EventClaims(
        create_db_engine(database_url), clock=clock
    )


def test_a_claim_not_done_within_its_lease_can_be_claimed_again(database_url):
    clock = Clock()
    first, second = two_processes(database_url, clock)
    assert first.claim("slack:T:message:C:1")
    assert not second.claim("slack:T:message:C:1")
    clock.now += CLAIM_LEASE - timedelta(seconds=1)
    assert not second.claim("slack:T:message:C:1")  # maybe still being answered
    clock.now += timedelta(seconds=2)  # the first process died without answering
    assert second.claim("slack:T:message:C:1")
    assert not first.claim("slack:T:message:C:1")  # the new lease holds


def test_a_done_claim_is_never_claimed_again(database_url):
    clock = Clock()
    first, second = two_processes(database_url, clock)
    assert first.claim("slack:T:message:C:2")
    first.done("slack:T:message:C:2")
    clock.now += CLAIM_LEASE * 10
    assert not second.claim("slack:T:message:C:2")


def test_renewing_a_claim_keeps_it_while_the_reply_takes_long(database_url):
    clock = Clock()
    first, second = two_processes(database_url, clock)
    assert first.claim("slack:T:message:C:3")
    for _ in range(5):  # a reply queued and generated for several leases
        clock.now += CLAIM_LEASE / 2
        first.renew("slack:T:message:C:3")
        assert not second.claim("slack:T:message:C:3")
