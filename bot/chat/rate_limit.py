"""A per-user sliding-window rate limit."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from bot.errors import UserFacingError


class RateLimited(UserFacingError):
    pass


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._sent: dict[str, deque[float]] = {}
        self._checks = 0

    def check(self, user: str) -> None:
        """Count one message from `user`, or raise RateLimited saying how long to wait."""
        if self.per_minute <= 0:
            return
        now = self.clock()
        sent = self._sent.setdefault(user, deque())
        while sent and now - sent[0] >= 60:
            sent.popleft()
        self._checks += 1
        if self._checks % 1024 == 0:  # now and then, forget people who went quiet
            for quiet in [
                u for u, times in self._sent.items() if not times or now - times[-1] >= 60
            ]:
                if quiet != user:
                    del self._sent[quiet]
        if len(sent) >= self.per_minute:
            wait = int(60 - (now - sent[0])) + 1
            raise RateLimited(
                f"少し話しかけるペースが速いようです。{wait}秒ほど待ってからもう一度どうぞ。"
            )
        sent.append(now)
