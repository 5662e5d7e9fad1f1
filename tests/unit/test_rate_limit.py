from __future__ import annotations

import pytest

from bot.chat.rate_limit import RateLimited, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_is_per_user_and_slides_with_time():
    clock = Clock()
    limiter = RateLimiter(2, clock)
    limiter.check("a")
    limiter.check("a")
    with pytest.raises(RateLimited) as caught:
        limiter.check("a")
    assert "秒ほど待って" in caught.value.user_message
    limiter.check("b")
    clock.now += 61
    limiter.check("a")


def test_zero_means_no_limit():
    limiter = RateLimiter(0, Clock())
    for _ in range(100):
        limiter.check("a")


def test_people_who_went_quiet_are_forgotten():
    clock = Clock()
    limiter = RateLimiter(5, clock)
    for i in range(2000):
        limiter.check(f"user{i}")
    clock.now += 120
    for i in range(1100):
        limiter.check(f"new{i}")
    assert not any(user.startswith("user") for user in limiter._sent)
    assert len(limiter._sent) <= 1100
