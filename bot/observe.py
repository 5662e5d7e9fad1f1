"""What the conversation manager reports as it answers, for metrics. Kept free of any metrics
library: the manager only knows this protocol (bot/service/metrics.py implements it)."""

from __future__ import annotations

from typing import Protocol

from bot.errors import UserFacingError
from bot.worker_types import GenerationResult


class ReplyObserver(Protocol):
    def received(self, platform: str) -> None:
        """A message reached the manager (commands included)."""

    def refused(self, platform: str, error: UserFacingError) -> None:
        """The message was answered with `error`'s message instead of a reply."""

    def failed(self, platform: str) -> None:
        """Something unexpected failed; the user got the generic apology."""

    def replied(self, platform: str, result: GenerationResult, latency_s: float) -> None:
        """A generated reply was sent, `latency_s` after the message reached the manager."""


class NoObserver:
    def received(self, platform: str) -> None:
        pass

    def refused(self, platform: str, error: UserFacingError) -> None:
        pass

    def failed(self, platform: str) -> None:
        pass

    def replied(self, platform: str, result: GenerationResult, latency_s: float) -> None:
        pass
